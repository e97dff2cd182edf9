//! The CSRF layer: unsafe methods need a same-site origin and a valid token.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{header, Request, StatusCode};
use tower::{Layer, Service};

use cloakroom::{is_safe_method, OriginCheck};

use crate::error::{status_response, Error, ErrorKind};
use crate::layer::Slot;

/// The form field the CSRF layer reads the token from.
pub const CSRF_FIELD: &str = "csrf_token";
/// The header the CSRF layer reads the token from (for `fetch` and htmx).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form body the layer reads to find [`CSRF_FIELD`] (larger forms: send the
/// token in [`CSRF_HEADER`]).
pub const DEFAULT_MAX_FORM_BYTES: usize = 1 << 20;

/// Refuses unsafe requests (POST, PUT, PATCH, DELETE, ...) with 403 when they come from
/// another site (`Sec-Fetch-Site`, else `Origin`, see [`OriginCheck`]) or carry no valid
/// token in the [`CSRF_HEADER`] header or, for `application/x-www-form-urlencoded` bodies,
/// the [`CSRF_FIELD`] field.
///
/// It reads the session, so it goes *inside* the [`SessionLayer`](crate::SessionLayer): in
/// axum, `.layer(CsrfLayer::new([..])).layer(session_layer)`.
#[derive(Clone)]
pub struct CsrfLayer {
    check: OriginCheck,
    max_form_bytes: usize,
}

impl fmt::Debug for CsrfLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfLayer")
            .field("check", &self.check)
            .field("max_form_bytes", &self.max_form_bytes)
            .finish()
    }
}

impl CsrfLayer {
    /// A layer accepting unsafe requests whose `Origin` is one of `allowed_origins` (like
    /// `https://shop.example`), when the browser sends no `Sec-Fetch-Site`.
    pub fn new<I, S>(allowed_origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            check: OriginCheck::new(allowed_origins),
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
        }
    }

    /// The largest form body read to find the token.
    #[must_use]
    pub fn with_max_form_bytes(mut self, bytes: usize) -> Self {
        self.max_form_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CsrfLayer`] wraps around the application.
#[derive(Clone)]
pub struct CsrfService<S> {
    inner: S,
    layer: CsrfLayer,
}

impl<S> fmt::Debug for CsrfService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for CsrfService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            if is_safe_method(req.method().as_str()) {
                return inner.call(req).await;
            }
            match checked(&layer, req).await {
                Ok(req) => inner.call(req).await,
                Err(response) => Ok(response),
            }
        })
    }
}

fn refuse(why: &'static str) -> Response {
    Error::new(ErrorKind::Forbidden, why).into_response()
}

/// The request back (its body re-assembled) if it passes, or the response refusing it.
async fn checked(layer: &CsrfLayer, req: Request<Body>) -> Result<Request<Body>, Response> {
    if let Err(e) = layer.check.check(
        req.method().as_str(),
        header_str(&req, header::ORIGIN.as_str()),
        header_str(&req, "sec-fetch-site"),
    ) {
        tracing::info!(error = %e, "CSRF: cross-site request refused");
        return Err(refuse("cross-site request refused"));
    }
    let Some(slot) = req.extensions().get::<Slot>().cloned() else {
        return Err(Error::new(
            ErrorKind::NotInstalled,
            "CsrfLayer must be inside SessionLayer: .layer(csrf).layer(sessions)",
        )
        .into_response());
    };
    let verify = |token: &str| slot.with(|s| s.verify_csrf(token)).unwrap_or(false);
    if let Some(token) = header_str(&req, CSRF_HEADER) {
        return if verify(token) {
            Ok(req)
        } else {
            tracing::info!("CSRF: invalid token in header");
            Err(refuse("invalid CSRF token"))
        };
    }
    let is_form = header_str(&req, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !is_form {
        tracing::info!("CSRF: no token");
        return Err(refuse("missing CSRF token"));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, layer.max_form_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return Err(status_response(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    let token = form_field(&bytes, CSRF_FIELD);
    if !token.is_some_and(verify) {
        tracing::info!("CSRF: missing or invalid token in form");
        return Err(refuse("missing or invalid CSRF token"));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn header_str<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The raw value of `name` in a urlencoded form. Tokens are base64url, which needs no
/// percent-decoding; a percent-encoded token simply fails to verify.
fn form_field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_form_field() {
        assert_eq!(
            form_field(b"a=1&csrf_token=abc&b=2", CSRF_FIELD),
            Some("abc")
        );
        assert_eq!(form_field(b"a=1&csrf_tokenx=abc", CSRF_FIELD), None);
        assert_eq!(form_field(b"\xff", CSRF_FIELD), None);
    }
}
