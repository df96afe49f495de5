//! CM's bus face: the 16/ECAP provider, token provisioning for EPR, and EPR's lifecycle events.
//!
//! Subjects (queue group = the CM instance name, so replicas share the load and each event is
//! handled once):
//! - `kaa.v1.service.{cm}.ecap.ep-token-request` ([`answer_token`])
//! - `kaa.v1.service.{cm}.ecap.ep-token-status-transition-request` ([`answer_transition`])
//! - `kaa.v1.service.{cm}.ecap.client-username-password-request` ([`answer_password`])
//! - `kaa.v1.service.{cm}.ecap.client-certificate-request` ([`answer_certificate`])
//! - `kaa.v1.service.{cm}.ecap.ep-token-provision-request`: kaa-rs, not in the RFC, JSON
//!   ([`answer_provision`]); EPR stores a registration's `endpointToken` through it.
//! - `kaa.v1.events.{epr}.endpoint.lifecycle.unregistered`: the endpoint's tokens are deleted
//!   (and their revocation broadcast).
//!
//! With a backend that sees revocations itself (Kubernetes Secrets, changed by anyone), [`serve`]
//! also publishes what it reports (`announce_revocations`).
//!
//! Status codes: 200 accepted; 400 malformed request; 401 wrong or unknown username/password (one
//! answer for both, so usernames cannot be probed); 403 a known but unusable token or credential
//! (`token suspended`, `token revoked`); 404 unknown token (or one of another application: as
//! unknown as any) or certificate; 409 a forbidden status transition.

use kaa_bus::{BusError, Message, Subscription};
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{
        self, ClientCertificateValidationRequest, ClientCertificateValidationResponse,
        ClientUsernamePasswordValidationRequest, ClientUsernamePasswordValidationResponse,
        EndpointTokenProvisionRequest, EndpointTokenProvisionResponse, EndpointTokenStatusTransitionRequest,
        EndpointTokenStatusTransitionResponse, EndpointTokenValidationRequest,
        EndpointTokenValidationResponse, canonical_serial,
    },
    elce::UnregisteredEvent,
    now_millis, subject,
};
use kaa_store::{CmError, CredentialStatus, EndpointToken, NewToken, TokenStatus};
use tokio_util::sync::CancellationToken;

use super::{CmState, Secret, check_token_value};
use crate::{rest::AppError, worker};

/// Requests handled at once per subject. Password checks are further limited to one per core
/// (see `password`), so this mostly bounds memory for queued work.
const MAX_IN_FLIGHT: usize = 64;

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: BusError,
    },
}

/// Runs CM's bus handlers until `shutdown` is cancelled (then waits for requests in flight).
///
/// Returns early only if a subscription cannot be made. Every subscription exists before the
/// "ready" log line, and the provisioning subject is subscribed last, so a provisioning request
/// that is answered proves all handlers are listening.
pub async fn serve(state: CmState, shutdown: CancellationToken) -> Result<(), ServeError> {
    let bus = state.bus().clone();
    let instance = state.config().instance.clone();
    let subscribe = |subject| {
        worker::subscribe(&bus, subject, &instance, |subject, source| {
            ServeError::Subscribe { subject, source }
        })
    };
    let request = |message_type| subject::ecap_request(&instance, message_type);
    let unregistered = subscribe(subject::elce_unregistered(&state.config().epr_instance)).await?;
    let token = subscribe(request(ecap::EP_TOKEN_REQUEST)).await?;
    let transition = subscribe(request(ecap::EP_TOKEN_STATUS_TRANSITION_REQUEST)).await?;
    let password = subscribe(request(ecap::CLIENT_USERNAME_PASSWORD_REQUEST)).await?;
    let certificate = subscribe(request(ecap::CLIENT_CERTIFICATE_REQUEST)).await?;
    let provision = subscribe(request(ecap::EP_TOKEN_PROVISION_REQUEST)).await?;
    tracing::info!(instance = %instance, "CM bus handlers ready");

    let run = |name: &'static str, sub: Subscription, handler: Handler| {
        worker::run(name, sub, MAX_IN_FLIGHT, &shutdown, handler)
    };
    tokio::join!(
        run(
            "cm.ecap.token",
            token,
            Box::new(worker::responder(&bus, &state, answer_token))
        ),
        run(
            "cm.ecap.transition",
            transition,
            Box::new(worker::responder(&bus, &state, answer_transition))
        ),
        run(
            "cm.ecap.password",
            password,
            Box::new(worker::responder(&bus, &state, answer_password))
        ),
        run(
            "cm.ecap.certificate",
            certificate,
            Box::new(worker::responder(&bus, &state, answer_certificate))
        ),
        run("cm.ecap.provision", provision, provisioner(&state)),
        run("cm.elce.unregistered", unregistered, on_unregistered(&state)),
        announce_revocations(&state, &shutdown),
    );
    Ok(())
}

type Handler = Box<dyn Fn(Message) -> worker::Handling + Send + Sync>;

/// Publishes the revocations the storage backend reports, in order, until shutdown (then those
/// already reported). Nothing to do for a backend that leaves announcing to CM.
async fn announce_revocations(state: &CmState, shutdown: &CancellationToken) {
    let Some(mut revocations) = state.store().take_revocations() else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            revocation = revocations.recv() => match revocation {
                Some(revocation) => state.announce(revocation).await,
                None => return,
            },
            () = shutdown.cancelled() => break,
        }
    }
    while let Ok(revocation) = revocations.try_recv() {
        state.announce(revocation).await;
    }
}

/// 16/ECAP `ep-token-request`: token -> endpoint, within the named application. The first
/// successful validation activates an `Inactive` token.
pub async fn answer_token(
    state: CmState,
    req: EndpointTokenValidationRequest,
) -> EndpointTokenValidationResponse {
    let mut resp = EndpointTokenValidationResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        ..Default::default()
    };
    let verdict = async {
        let token = token_of_app(&state, &req.token, &req.app_name).await?;
        let status = match token.status {
            TokenStatus::Inactive => activate(&state, &token).await?,
            other => other,
        };
        Ok::<_, AppError>((token, status))
    };
    match verdict.await {
        Ok((token, status)) => {
            match status {
                TokenStatus::Inactive | TokenStatus::Active => resp.status_code = 200,
                TokenStatus::Suspended | TokenStatus::Revoked => {
                    resp.status_code = 403;
                    resp.reason_phrase = Some(refusal(status).to_owned());
                }
            }
            // Also on 403: the caller holds the token and learns which of its ids is refused.
            resp.token_id = Some(token.id);
            resp.endpoint_id = Some(token.endpoint_id);
        }
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
        }
    }
    resp
}

/// `Inactive` -> `Active`; returns the status the token ended up in (another request may have
/// moved it in between, e.g. suspended it).
async fn activate(state: &CmState, token: &EndpointToken) -> Result<TokenStatus, AppError> {
    if state.store().activate_token(&token.id).await? {
        tracing::info!(token_id = %token.id, endpoint_id = %token.endpoint_id, "endpoint token activated");
        return Ok(TokenStatus::Active);
    }
    Ok(state.store().token(&token.id).await?.status)
}

fn refusal(status: TokenStatus) -> &'static str {
    match status {
        TokenStatus::Revoked => "token revoked",
        _ => "token suspended",
    }
}

/// The token with this value, if it belongs to `app_name`; anything else is "unknown".
async fn token_of_app(state: &CmState, token: &str, app_name: &str) -> Result<EndpointToken, AppError> {
    match state.store().token_by_value(token).await? {
        Some(t) if t.app_name == app_name => Ok(t),
        // A token of another application is as unknown as a token of no application: saying
        // more would let a client probe other applications' tokens.
        _ => Err(AppError::NotFound(format!(
            "unknown endpoint token for application {app_name}"
        ))),
    }
}

/// 16/ECAP `ep-token-status-transition-request`: `targetStatus` is `Active`, `Suspended` or
/// `Revoked`; a forbidden transition (out of `Revoked`) is 409.
pub async fn answer_transition(
    state: CmState,
    req: EndpointTokenStatusTransitionRequest,
) -> EndpointTokenStatusTransitionResponse {
    let mut resp = EndpointTokenStatusTransitionResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        ..Default::default()
    };
    let outcome = async {
        let to = target_status(&req.target_status)?;
        let token = token_of_app(&state, &req.token, &req.app_name).await?;
        state.set_token_status(&token.id, to).await
    };
    match outcome.await {
        Ok(_) => resp.status_code = 200,
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
        }
    }
    resp
}

/// Parses a requested status; `Inactive` is not a target (only issuing produces it).
pub(crate) fn target_status(status: &str) -> Result<TokenStatus, AppError> {
    match status.parse() {
        Ok(TokenStatus::Inactive) | Err(_) => Err(AppError::BadRequest(format!(
            "target status {status:?} is not one of Active, Suspended, Revoked"
        ))),
        Ok(to) => Ok(to),
    }
}

/// 16/ECAP `client-username-password-request`.
pub async fn answer_password(
    state: CmState,
    req: ClientUsernamePasswordValidationRequest,
) -> ClientUsernamePasswordValidationResponse {
    let mut resp = ClientUsernamePasswordValidationResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        ..Default::default()
    };
    let (Some(username), Some(password)) = (req.username, req.password.map(Secret::new)) else {
        resp.status_code = 401;
        resp.reason_phrase = Some("username and password are required".to_owned());
        return resp;
    };
    let found = match state.store().password_credential(&username).await {
        Ok(found) => found,
        Err(e) => {
            let e = AppError::from(e);
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
            return resp;
        }
    };
    // Verify even for an unknown user (against a dummy hash): the time taken must not tell.
    let verified = state
        .passwords()
        .verify(&password, found.as_ref().map(|f| f.password_hash.as_str()))
        .await;
    match found {
        Some(found) if verified => {
            let credential = found.credential;
            (resp.status_code, resp.reason_phrase) = credential_verdict(credential.status);
            resp.credential_id = Some(credential.id);
            resp.client_id = Some(credential.client_id);
        }
        _ => {
            resp.status_code = 401;
            resp.reason_phrase = Some("bad username or password".to_owned());
        }
    }
    resp
}

/// 16/ECAP `client-certificate-request`: issuer + base-10 serial -> credential and client id.
/// The gateway has already verified the chain; this only says whether the certificate is
/// registered.
pub async fn answer_certificate(
    state: CmState,
    req: ClientCertificateValidationRequest,
) -> ClientCertificateValidationResponse {
    let mut resp = ClientCertificateValidationResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        ..Default::default()
    };
    let outcome = async {
        let serial = canonical_serial(&req.serial_number)
            .ok_or_else(|| AppError::BadRequest("serialNumber must be a base-10 integer".to_owned()))?;
        state
            .store()
            .certificate_credential(&req.issuer, &serial)
            .await?
            .ok_or_else(|| AppError::NotFound("certificate not registered".to_owned()))
    };
    match outcome.await {
        Ok(credential) => {
            (resp.status_code, resp.reason_phrase) = credential_verdict(credential.status);
            resp.credential_id = Some(credential.id);
            resp.client_id = Some(credential.client_id);
        }
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
        }
    }
    resp
}

/// The answer on a registered client credential: 200 if it is active, else 403.
fn credential_verdict(status: CredentialStatus) -> (i32, Option<String>) {
    match status {
        CredentialStatus::Active => (200, None),
        CredentialStatus::Revoked => (403, Some("credential revoked".to_owned())),
    }
}

/// kaa-rs `ep-token-provision-request` (JSON): stores a caller-chosen token as `Inactive`.
pub async fn answer_provision(
    state: CmState,
    req: EndpointTokenProvisionRequest,
) -> EndpointTokenProvisionResponse {
    let mut resp = EndpointTokenProvisionResponse {
        correlation_id: req.correlation_id.clone(),
        timestamp: now_millis(),
        ..Default::default()
    };
    let outcome = async {
        check_token_value(&req.token).map_err(AppError::BadRequest)?;
        if req.endpoint_id.is_empty() || req.app_name.is_empty() || req.app_version.is_empty() {
            return Err(AppError::BadRequest(
                "endpointId, appName and appVersion must not be empty".to_owned(),
            ));
        }
        let token = state
            .store()
            .insert_token(NewToken {
                endpoint_id: req.endpoint_id,
                app_name: req.app_name,
                app_version: req.app_version,
                token: req.token,
            })
            .await
            .map_err(|e| match e.as_cm() {
                Some(CmError::DuplicateToken) => {
                    AppError::Conflict("endpoint token is already in use".to_owned())
                }
                _ => e.into(),
            })?;
        tracing::info!(token_id = %token.id, endpoint_id = %token.endpoint_id, "endpoint token provisioned");
        Ok(token.id)
    };
    match outcome.await {
        Ok(token_id) => {
            resp.status_code = 201;
            resp.token_id = Some(token_id);
        }
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
        }
    }
    resp
}

/// The JSON counterpart of [`worker::responder`] for provisioning requests.
fn provisioner(state: &CmState) -> Handler {
    let state = state.clone();
    Box::new(move |msg: Message| {
        let state = state.clone();
        Box::pin(async move {
            let response = match EndpointTokenProvisionRequest::from_json(&msg.payload) {
                Ok(req) => answer_provision(state.clone(), req).await,
                Err(e) => {
                    // serde_json's message may quote a value; the request carries a token, so
                    // only the position is reported.
                    tracing::warn!(subject = %msg.subject, line = e.line(), column = e.column(), "undecodable provisioning request");
                    EndpointTokenProvisionResponse {
                        timestamp: now_millis(),
                        status_code: 400,
                        reason_phrase: Some(format!(
                            "invalid ep-token-provision-request JSON (line {}, column {})",
                            e.line(),
                            e.column()
                        )),
                        ..Default::default()
                    }
                }
            };
            worker::reply(state.bus(), &msg, response.to_json()).await;
        })
    })
}

/// EPR deleted an endpoint: delete its tokens and broadcast their revocation.
fn on_unregistered(state: &CmState) -> Handler {
    let state = state.clone();
    Box::new(move |msg: Message| {
        let state = state.clone();
        Box::pin(async move {
            match UnregisteredEvent::from_avro(&msg.payload) {
                Ok(event) => {
                    if let Err(e) = state.delete_endpoint_tokens(&event.endpoint_id).await {
                        tracing::error!(endpoint_id = %event.endpoint_id, error = %e.message(), "cannot delete the tokens of an unregistered endpoint");
                    }
                }
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable unregistered event")
                }
            }
        })
    })
}

worker::undecodable!(
    EndpointTokenValidationResponse,
    EndpointTokenStatusTransitionResponse,
    ClientUsernamePasswordValidationResponse,
    ClientCertificateValidationResponse,
);
