//! The registration and refresh endpoints, as axum routes the application merges into its
//! router (inside the session layer, which hands them the session).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::error::{Error, ErrorKind};
use crate::layer::{Shared, Slot};

use super::proof::{self, Proof};
use super::{
    new_binding_id, to_sf_string, Binder, Binding, Purpose, CHALLENGE_HEADER, RESPONSE_HEADER,
    SESSION_ID_HEADER,
};

/// The two endpoints at the configured paths.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(binder: &Binder) -> Router<S> {
    Router::new()
        .route(&binder.config.registration_path, post(register))
        .route(&binder.config.refresh_path, post(refresh))
}

/// The session slot of this request and the layer's shared state.
fn context(extensions: &http::Extensions) -> Result<(Slot, std::sync::Arc<Shared>), Error> {
    let slot = extensions.get::<Slot>().cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::NotInstalled,
            "no SessionLayer around the device binding routes (add .layer(session_layer) after merging them)",
        )
    })?;
    let shared = slot.shared.clone();
    Ok((slot, shared))
}

/// The layer's device binding.
fn binder_of(shared: &Shared) -> Result<&Binder, Error> {
    shared.binder.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::NotInstalled,
            "device binding routes under a SessionLayer built without Builder::with_device_binding",
        )
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the proof's audience (if it names one) is this endpoint: its path is `path`.
fn audience_ok(proof: &Proof, path: &str) -> bool {
    let Some(aud) = &proof.aud else {
        return true;
    };
    let after_scheme = aud.split_once("://").map_or(aud.as_str(), |(_, rest)| rest);
    let from_path = if aud.contains("://") {
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    } else {
        after_scheme
    };
    let aud_path = from_path.split(['?', '#']).next().unwrap_or(from_path);
    aud_path == path
}

/// A bare answer with no body: the reason stays in the debug log, never in the answer.
fn refuse(status: StatusCode, why: &'static str) -> Response {
    tracing::debug!(reason = why, "device binding request refused");
    let mut response = status.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The session configuration (the draft's "session instructions").
fn configuration(binder: &Binder, shared: &Shared, binding: &Binding) -> String {
    serde_json::json!({
        "session_identifier": binding.id,
        "refresh_url": binder.config.refresh_path,
        "scope": { "include_site": false },
        "credentials": [{
            "type": "cookie",
            "name": binder.bound_cookie,
            "attributes": binder.bound_cookie_attributes(&shared.cookie),
        }],
    })
    .to_string()
}

fn challenge_header(challenge: &str, id: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(&format!(
        "{};id={}",
        to_sf_string(challenge),
        to_sf_string(id)
    ))
    .map_err(|_| {
        Error::new(
            ErrorKind::Session,
            "a challenge is not a valid header value",
        )
    })
}

fn sensitive_cookie(line: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(line).map_err(|_| {
        Error::new(
            ErrorKind::Session,
            "the bound cookie is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// 200 with the configuration, a fresh bound cookie and the challenge for the next refresh.
fn bound_answer(
    binder: &Binder,
    shared: &Shared,
    binding: &Binding,
    next_challenge: &str,
    now: u64,
) -> Result<Response, Error> {
    let cookie = binder.bound_cookie(&shared.cookie, binding, now)?;
    let mut response = Response::new(Body::from(configuration(binder, shared, binding)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.append(header::SET_COOKIE, sensitive_cookie(&cookie)?);
    headers.insert(
        HeaderName::from_static(CHALLENGE_HEADER),
        challenge_header(next_challenge, &binding.id)?,
    );
    Ok(response)
}

/// `POST` registration: the browser's first proof, signed with the key it just made.
async fn register(req: Request) -> Response {
    answer(req, Purpose::Register).await
}

/// `POST` refresh: a proof over a challenge of ours, signed with the session's key.
async fn refresh(req: Request) -> Response {
    answer(req, Purpose::Refresh).await
}

/// Runs the endpoint for `purpose` with this request's session and binder; an error becomes
/// its response.
async fn answer(req: Request, purpose: Purpose) -> Response {
    let (parts, _body) = req.into_parts();
    let result = async {
        let (slot, shared) = context(&parts.extensions)?;
        let binder = binder_of(&shared)?;
        let now = shared.clock.now();
        let cx = Cx(&parts.headers, slot, &shared, binder, now);
        match purpose {
            Purpose::Register => try_register(cx).await,
            Purpose::Refresh => try_refresh(cx).await,
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// What an endpoint works with: the request's headers and session, the layer, the time.
struct Cx<'a>(&'a HeaderMap, Slot, &'a Shared, &'a Binder, u64);

async fn try_register(cx: Cx<'_>) -> Result<Response, Error> {
    let Cx(headers, slot, shared, binder, now) = cx;
    let Some(value) = header_str(headers, RESPONSE_HEADER) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration without a proof",
        ));
    };
    let (signed_in, bound, id_hash) = slot.with(|s| {
        (
            s.user_id().is_some(),
            s.device_binding().is_some(),
            s.id_hash(),
        )
    })?;
    let Some(id_hash) = id_hash.filter(|_| signed_in) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration outside a signed-in session",
        ));
    };
    if bound {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration of a session already bound",
        ));
    }
    let Ok(proof) = proof::verify_registration(value) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration proof invalid",
        ));
    };
    if !audience_ok(&proof, &binder.config.registration_path) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration proof for another endpoint",
        ));
    }
    let Some((_, until)) =
        binder.open_challenge(&proof.challenge, Purpose::Register, id_hash.as_bytes(), now)
    else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration challenge invalid or expired",
        ));
    };
    if !use_up_challenge(binder, shared, &proof, now, until).await? {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "registration challenge already used",
        ));
    }
    // The key binds one session only, for as long as any session can live.
    let store = shared.manager.store().as_ref();
    let policy = shared.manager.policy();
    let key_until = now.saturating_add(policy.absolute().max(policy.max_remember()).as_secs());
    if !binder
        .use_up(store, "key", &proof.key.fingerprint_input(), now, key_until)
        .await?
    {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "key already bound to a session",
        ));
    }
    let binding = Binding {
        id: new_binding_id()?,
        key: proof.key,
        since: now,
        challenged: now,
    };
    let next = binder.challenge(Purpose::Refresh, binding.id.as_bytes(), now)?;
    let value = binding
        .to_value()
        .ok_or_else(|| Error::new(ErrorKind::Session, "the binding does not encode"))?;
    // The session may not have changed meanwhile (one request), but check under the lock.
    let stored = slot.with(|s| {
        let same = s.id_hash() == Some(id_hash) && s.device_binding().is_none();
        if same {
            s.set_device_binding(Some(value));
        }
        same
    })?;
    if !stored {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "session changed during registration",
        ));
    }
    tracing::info!(session = %id_hash.short(), "session bound to a device key");
    bound_answer(binder, shared, &binding, &next, now)
}

async fn try_refresh(cx: Cx<'_>) -> Result<Response, Error> {
    let Cx(headers, slot, shared, binder, now) = cx;
    let Some(id) = header_str(headers, SESSION_ID_HEADER).and_then(super::sf_string) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "refresh without a session identifier",
        ));
    };
    let (binding, id_hash) = slot.with(|s| (Binding::of(s), s.id_hash()))?;
    let short = id_hash.map(|h| h.short()).unwrap_or_default();
    // No bound session here (logged out, ended, expired, another one): a 4xx other than
    // 403 tells the browser to end its side too.
    let Some(mut binding) = binding.filter(|b| b.id == id) else {
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "refresh for no bound session of this cookie",
        ));
    };
    let Some(value) = header_str(headers, RESPONSE_HEADER) else {
        return challenge_again(&slot, binder, &mut binding, now, "refresh without a proof");
    };
    let proof = match proof::verify_refresh(value, &binding.key) {
        Ok(proof) => proof,
        Err(_) => {
            // Whoever sent this holds the session's cookie but not its key: end the session.
            slot.with(cloakroom::Session::logout)?;
            tracing::warn!(session = %short, "device-bound session ended: a refresh proof failed the signature check");
            let mut response = refuse(StatusCode::UNAUTHORIZED, "refresh proof invalid");
            response.headers_mut().append(
                header::SET_COOKIE,
                sensitive_cookie(&binder.bound_cookie_removal(&shared.cookie))?,
            );
            return Ok(response);
        }
    };
    if proof.sub.as_deref().is_some_and(|sub| sub != binding.id)
        || !audience_ok(&proof, &binder.config.refresh_path)
    {
        return challenge_again(
            &slot,
            binder,
            &mut binding,
            now,
            "refresh proof for another session or endpoint",
        );
    }
    let (issued, until) = match binder.open_challenge(
        &proof.challenge,
        Purpose::Refresh,
        binding.id.as_bytes(),
        now,
    ) {
        Some(times) => times,
        None => {
            return challenge_again(
                &slot,
                binder,
                &mut binding,
                now,
                "refresh challenge invalid or expired",
            )
        }
    };
    let window = binder.config.old_challenge_window.as_secs();
    if issued < binding.challenged && now >= binding.challenged.saturating_add(window) {
        return challenge_again(
            &slot,
            binder,
            &mut binding,
            now,
            "refresh challenge superseded",
        );
    }
    if !use_up_challenge(binder, shared, &proof, now, until).await? {
        return challenge_again(
            &slot,
            binder,
            &mut binding,
            now,
            "refresh challenge already used",
        );
    }
    let next = binder.challenge(Purpose::Refresh, binding.id.as_bytes(), now)?;
    binding.challenged = now;
    store_binding(&slot, &binding)?;
    tracing::debug!(session = %short, "device-bound session refreshed");
    bound_answer(binder, shared, &binding, &next, now)
}

/// Marks the challenge `proof` answers as used (until it expires); false if it already was.
async fn use_up_challenge(
    binder: &Binder,
    shared: &Shared,
    proof: &Proof,
    now: u64,
    until: u64,
) -> Result<bool, Error> {
    let store = shared.manager.store().as_ref();
    let challenge = proof.challenge.as_bytes();
    binder
        .use_up(store, "challenge", challenge, now, until.saturating_add(1))
        .await
}

/// Writes `binding` back (the time of its newest challenge), if the session still has it.
fn store_binding(slot: &Slot, binding: &Binding) -> Result<(), Error> {
    let value = binding
        .to_value()
        .ok_or_else(|| Error::new(ErrorKind::Session, "the binding does not encode"))?;
    slot.with(|s| {
        if Binding::of(s).is_some_and(|b| b.id == binding.id) {
            s.set_device_binding(Some(value));
        }
    })
}

/// 403 with a fresh challenge: the browser signs it and tries again.
fn challenge_again(
    slot: &Slot,
    binder: &Binder,
    binding: &mut Binding,
    now: u64,
    why: &'static str,
) -> Result<Response, Error> {
    let challenge = binder.challenge(Purpose::Refresh, binding.id.as_bytes(), now)?;
    binding.challenged = now;
    store_binding(slot, binding)?;
    let mut response = refuse(StatusCode::FORBIDDEN, why);
    response.headers_mut().insert(
        HeaderName::from_static(CHALLENGE_HEADER),
        challenge_header(&challenge, &binding.id)?,
    );
    Ok(response)
}
