//! The NATS bus: a thin adapter from [`crate::Bus`] to an `async_nats::Client`.
//!
//! It owns the translation of async-nats types and errors into ours, and one guarantee the raw client
//! does not give: [`subscribe`] returns only after the server has registered the interest, so a message
//! published right afterwards from any connection to the same server reaches the new subscription
//! (the in-process bus behaves the same way).

use std::time::Duration;

use async_nats::{Client, RequestErrorKind, connection::State};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{BusError, Message};

/// Upper bound on the round trip that confirms a new subscription (see [`subscribe`]).
const SUBSCRIBE_SYNC_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn connect(url: &str) -> Result<Client, BusError> {
    async_nats::ConnectOptions::new()
        .name("kaa-rs")
        .connect(url)
        .await
        .map_err(|err| BusError::Nats(format!("cannot connect to {url}: {err}")))
}

pub(crate) async fn publish(
    client: &Client,
    subject: &str,
    reply_to: Option<&str>,
    payload: Bytes,
) -> Result<(), BusError> {
    let result = match reply_to {
        None => client.publish(subject.to_owned(), payload).await,
        Some(reply_to) => {
            client
                .publish_with_reply(subject.to_owned(), reply_to.to_owned(), payload)
                .await
        }
    };
    result.map_err(|err| BusError::Nats(err.to_string()))
}

pub(crate) async fn subscribe(
    client: &Client,
    subject: &str,
    queue_group: Option<&str>,
) -> Result<async_nats::Subscriber, BusError> {
    let result = match queue_group {
        None => client.subscribe(subject.to_owned()).await,
        Some(queue) => client.queue_subscribe(subject.to_owned(), queue.to_owned()).await,
    };
    let subscriber = result.map_err(|err| BusError::Nats(err.to_string()))?;
    sync_with_server(client).await;
    Ok(subscriber)
}

/// Waits until the server has processed everything this connection sent before.
///
/// async-nats exposes no PING, and `flush` only waits for the socket write. The server reads one
/// connection's commands in order, so once a message we publish to a fresh inbox of our own comes
/// back, every earlier SUB was processed. (A request to a subject nobody serves would be cheaper, but
/// any wildcard subscriber covering `_INBOX` would count as a responder and stall it to the timeout.)
/// Best effort: a failure only loses the guarantee, so it is logged, not returned.
async fn sync_with_server(client: &Client) {
    if client.connection_state() != State::Connected {
        return;
    }
    let inbox = client.new_inbox();
    let round_trip = async {
        let mut echo = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| err.to_string())?;
        client
            .publish(inbox.clone(), Bytes::new())
            .await
            .map_err(|err| err.to_string())?;
        echo.next()
            .await
            .map(drop)
            .ok_or_else(|| "connection closed".to_owned())
    };
    match tokio::time::timeout(SUBSCRIBE_SYNC_TIMEOUT, round_trip).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "subscription round trip to nats-server failed"),
        Err(_) => tracing::debug!("subscription round trip to nats-server timed out"),
    }
}

pub(crate) async fn request(
    client: &Client,
    subject: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<Message, BusError> {
    let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
    match client.send_request(subject.to_owned(), request).await {
        Ok(reply) => Ok(message(reply)),
        Err(err) => Err(match err.kind() {
            RequestErrorKind::TimedOut => BusError::Timeout,
            RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_owned()),
            _ => BusError::Nats(err.to_string()),
        }),
    }
}

pub(crate) async fn flush(client: &Client) -> Result<(), BusError> {
    client
        .flush()
        .await
        .map_err(|err| BusError::Nats(err.to_string()))
}

pub(crate) fn is_connected(client: &Client) -> bool {
    client.connection_state() == State::Connected
}

pub(crate) fn message(message: async_nats::Message) -> Message {
    Message {
        subject: message.subject.to_string(),
        reply_to: message.reply.map(|reply| reply.to_string()),
        payload: message.payload,
    }
}
