//! `CurrentUser<U>` and the application's `UserLoader`.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use cloakroom::BoxError;

use crate::error::{Error, ErrorKind};
use crate::extract::slot;

/// Loads the logged-in user from the application's user store, on every request, so a
/// permission revoked there takes effect on the next request (sessions hold a user id, never
/// permissions).
///
/// ```
/// use cloakroom_tower::{async_trait, BoxError, UserLoader};
///
/// #[derive(Clone)]
/// struct User { name: String, admin: bool }
///
/// struct Users;
///
/// #[async_trait]
/// impl UserLoader for Users {
///     type User = User;
///     async fn load_user(&self, user_id: &str) -> Result<Option<User>, BoxError> {
///         Ok((user_id == "u1").then(|| User { name: "Ada".into(), admin: false }))
///     }
/// }
/// ```
#[async_trait]
pub trait UserLoader: Send + Sync + 'static {
    /// The application's user.
    type User: Send + Sync + 'static;

    /// The user with this id, or `None` if there is none (any more).
    ///
    /// # Errors
    /// Any failure of the user store: the request is answered 503, never as anonymous.
    async fn load_user(&self, user_id: &str) -> Result<Option<Self::User>, BoxError>;
}

pub(crate) struct LoaderHandle<U>(Arc<dyn UserLoader<User = U>>);

impl<U> Clone for LoaderHandle<U> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<U: Send + Sync + 'static> LoaderHandle<U> {
    pub(crate) fn new<L: UserLoader<User = U>>(loader: L) -> Self {
        Self(Arc::new(loader))
    }
}

/// The logged-in user, loaded by the [`UserLoader`] for `U` given to
/// [`Builder::with_user_loader`](crate::Builder::with_user_loader).
///
/// As an extractor it answers 401 without a logged-in user; take `Option<CurrentUser<U>>` to
/// handle that yourself (a redirect to the login page). A failing loader answers 503.
pub struct CurrentUser<U>(pub U);

impl<U> Deref for CurrentUser<U> {
    type Target = U;
    fn deref(&self) -> &U {
        &self.0
    }
}

impl<U: fmt::Debug> fmt::Debug for CurrentUser<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CurrentUser").field(&self.0).finish()
    }
}

impl<U, S> OptionalFromRequestParts<S> for CurrentUser<U>
where
    U: Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Error> {
        let slot = slot(parts)?;
        let Some(user_id) = slot.with(|s| s.user_id().map(str::to_owned))? else {
            return Ok(None);
        };
        let loader = parts
            .extensions
            .get::<LoaderHandle<U>>()
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotInstalled,
                    format!(
                        "CurrentUser<{}> needs SessionLayer::builder().with_user_loader(..) for that type",
                        std::any::type_name::<U>()
                    ),
                )
            })?;
        match loader.0.load_user(&user_id).await {
            Ok(user) => Ok(user.map(CurrentUser)),
            Err(e) => {
                tracing::error!(error = %e, "the user loader failed");
                Err(Error::new(
                    ErrorKind::Unavailable,
                    "the user store is unavailable",
                ))
            }
        }
    }
}

impl<U, S> FromRequestParts<S> for CurrentUser<U>
where
    U: Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Unauthorized, "not logged in"))
    }
}
