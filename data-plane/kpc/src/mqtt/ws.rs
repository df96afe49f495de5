//! MQTT over WebSocket (MQTT 3.1.1 and 5, section 6): the upgrade, and a byte stream over the
//! WebSocket's binary messages so that the ordinary session loop serves it.
//!
//! The upgrade must ask for the configured path and offer the `mqtt` subprotocol, which the
//! answer then selects (the specs require the server to select it; a client that does not offer
//! it is refused, since it would not speak MQTT). MQTT packets need not be aligned to WebSocket
//! messages: a packet may span several messages and a message may hold several packets, so the
//! adapter is a plain byte stream and the MQTT codec finds the packet boundaries. A text message
//! is a protocol error that ends the connection; pings are answered by tungstenite.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The WebSocket subprotocol of MQTT (3.1.1 and 5 alike).
const SUBPROTOCOL: &str = "mqtt";

/// Completes the WebSocket upgrade on `stream` (plain TCP or TLS), refusing other paths (404) and
/// clients that do not offer the `mqtt` subprotocol (400). `max_packet` bounds what one message
/// may hold, so that a client cannot make the server buffer more than one large packet.
pub(crate) async fn accept<S>(stream: S, path: &str, max_packet: usize) -> Result<WsBytes<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Slack for the fixed header and for a small packet sharing a message with a large one.
    let max_message = max_packet.saturating_add(1024);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, Upgrade { path }, Some(config)).await?;
    Ok(WsBytes {
        ws,
        unread: Bytes::new(),
    })
}

/// Decides one upgrade request: the answer selecting `mqtt`, or the refusal.
struct Upgrade<'a> {
    path: &'a str,
}

impl Callback for Upgrade<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        upgrade(self.path, request, response)
    }
}

#[expect(clippy::result_large_err, reason = "tungstenite's callback answers this way")]
fn upgrade(path: &str, request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("MQTT over WebSocket is served on {path}"),
        ));
    }
    let offers_mqtt = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offers_mqtt {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the `mqtt` subprotocol (Sec-WebSocket-Protocol: mqtt)".to_owned(),
        ));
    }
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

fn refusal(status: StatusCode, why: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why));
    *response.status_mut() = status;
    response
}

/// The byte stream carried by a WebSocket's binary messages: every write is one binary message,
/// reads continue across message boundaries.
#[derive(Debug)]
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    unread: Bytes,
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.unread = data,
                // MQTT 6.0: any other data frame closes the network connection.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: MQTT over WebSocket is binary only",
                    )));
                }
                // Answered by tungstenite on the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // A close (the close handshake is tungstenite's) or the end of the stream: EOF.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let ws = &mut self.get_mut().ws;
        ready!(Pin::new(&mut *ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(io_error)
    }

    /// Sends a close frame, then closes the underlying stream.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(path: &str, protocol: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(p) = protocol {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_upgrade_needs_the_path_and_the_mqtt_subprotocol() {
        let ok = upgrade(
            "/mqtt",
            &request("/mqtt?x=1", Some("mqttv3.1, mqtt")),
            Response::default(),
        )
        .unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqtt");
        let wrong_path = upgrade("/mqtt", &request("/other", Some("mqtt")), Response::default());
        assert_eq!(wrong_path.unwrap_err().status(), StatusCode::NOT_FOUND);
        for protocol in [None, Some("mqttv3.1"), Some("wamp")] {
            let refused = upgrade("/mqtt", &request("/mqtt", protocol), Response::default());
            assert_eq!(
                refused.unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{protocol:?}"
            );
        }
    }
}
