//! Application services as the client API sees them: who a request made
//! with an `as_token` acts as (identity assertion), and who may register
//! users and create aliases in their namespaces.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#client-server-api-extensions>

use std::collections::HashMap;

use axum::http::request::Parts;
use myelin_config::Config;
use myelin_config::appservice::{AppService, load_app_services};
use myelin_storage::Db;
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;

use crate::api::Identity;
use crate::auth::AuthedUser;
use crate::error::{ClientApiError, Result};
use crate::storage::{accounts, devices, tokens};

/// How long a service may take to answer a query (it may be creating a room).
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The registered application services, found by their token's hash.
pub struct AppServices {
    services: Vec<AppService>,
    by_token_hash: HashMap<String, usize>,
    /// For calls to the services, whose URLs the operator configured.
    http: reqwest::Client,
}

/// The `user_id` and `device_id` query parameters an application service
/// asserts; ignored on other callers' requests.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Assertion {
    pub user_id: Option<String>,
    pub device_id: Option<String>,
}

impl Assertion {
    pub fn of(parts: &Parts) -> Self {
        let mut assertion = Self::default();
        for (name, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "user_id" => assertion.user_id = Some(value.into_owned()),
                "device_id" => assertion.device_id = Some(value.into_owned()),
                _ => {}
            }
        }
        assertion
    }
}

fn exclusive(message: &str) -> MatrixError {
    MatrixError::new(ErrorCode::Exclusive, message)
}

impl AppServices {
    /// The services of `global.app_service_config_files`; each one's sender
    /// account is created (at `now_ms`) if it does not exist yet.
    pub async fn load(config: &Config, db: &Db, now_ms: i64) -> Result<Self, AppServiceError> {
        let services = load_app_services(&config.global.app_service_config_files, &config.global.server_name)
            .map_err(|errors| AppServiceError::Config(errors.to_string()))?;
        for service in &services {
            let localpart = &service.registration.sender_localpart;
            let account = accounts::NewAccount {
                localpart,
                password_hash: None,
                is_admin: false,
                user_type: None,
                is_guest: false,
                created_ms: now_ms,
            };
            accounts::create(db, &account).await?;
            tracing::info!(id = service.id(), sender = %service.sender, "application service registered");
        }
        let by_token_hash = services
            .iter()
            .enumerate()
            .map(|(i, service)| (myelin_types::random::token_hash(&service.registration.as_token), i))
            .collect();
        Ok(Self { services, by_token_hash, http: reqwest::Client::new() })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The service whose `as_token` has this hash.
    pub fn by_token_hash(&self, hash: &str) -> Option<&AppService> {
        self.by_token_hash.get(hash).map(|&i| &self.services[i])
    }

    pub fn by_id(&self, id: &str) -> Option<&AppService> {
        self.services.iter().find(|service| service.id() == id)
    }

    /// The application service behind a request, if its token was one's.
    pub fn of_caller(&self, user: &AuthedUser) -> Option<&AppService> {
        user.app_service.as_deref().and_then(|id| self.by_id(id))
    }

    /// Ask each service whose aliases namespace holds `alias` to create it
    /// (`GET /_matrix/app/v1/rooms/{alias}`, the service creating the room
    /// and alias through the client API before it answers); `true` once one
    /// answers 200.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1roomsroomalias>
    pub async fn query_alias(&self, alias: &str) -> bool {
        let asked = self.services.iter().filter(|service| service.is_alias_in_namespace(alias));
        self.query(asked, "rooms", alias).await
    }

    /// Some service's users namespace holds `user_id`.
    pub fn claims_user(&self, user_id: &str) -> bool {
        self.services.iter().any(|service| service.is_user_in_namespace(user_id))
    }

    /// Ask each service whose users namespace holds `user_id` to create that
    /// user (`GET /_matrix/app/v1/users/{userId}`); `true` once one answers 200.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1usersuserid>
    pub async fn query_user(&self, user_id: &str) -> bool {
        let asked = self.services.iter().filter(|service| service.is_user_in_namespace(user_id));
        self.query(asked, "users", user_id).await
    }

    /// One query to each of `services` in turn, until one answers 200. A
    /// service that fails or says no is only logged.
    async fn query(&self, services: impl Iterator<Item = &AppService>, kind: &str, id: &str) -> bool {
        let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        for service in services {
            let Some(url) = &service.registration.url else { continue };
            let asked = self
                .http
                .get(format!("{}/_matrix/app/v1/{kind}/{encoded}", url.trim_end_matches('/')))
                .bearer_auth(&service.registration.hs_token)
                .timeout(QUERY_TIMEOUT)
                .send()
                .await;
            match asked {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) => tracing::debug!(id = service.id(), kind, status = %response.status(), "query declined"),
                Err(error) => tracing::info!(id = service.id(), kind, error = %error.without_url(), "query failed"),
            }
        }
        false
    }

    /// `400 M_EXCLUSIVE` when another service than `caller` holds this user
    /// exclusively (for registrations by anyone but that service).
    pub fn check_user_free(&self, user_id: &str, caller: Option<&AppService>) -> Result<(), MatrixError> {
        let taken =
            self.services.iter().any(|s| s.is_exclusive_user(user_id) && caller.is_none_or(|c| c.id() != s.id()));
        if taken { Err(exclusive("This user ID is reserved by an application service")) } else { Ok(()) }
    }

    /// `400 M_EXCLUSIVE` for an alias outside the calling service's
    /// namespaces, or in another service's exclusive one.
    pub fn check_alias_free(&self, alias: &str, caller: Option<&AppService>) -> Result<(), MatrixError> {
        if let Some(caller) = caller
            && !caller.is_alias_in_namespace(alias)
        {
            return Err(exclusive("This alias is outside the application service's namespaces"));
        }
        let taken =
            self.services.iter().any(|s| s.is_exclusive_alias(alias) && caller.is_none_or(|c| c.id() != s.id()));
        if taken { Err(exclusive("This alias is reserved by an application service")) } else { Ok(()) }
    }
}

/// Why the application services could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AppServiceError {
    #[error("application service registrations:\n{0}")]
    Config(String),
    #[error("creating an application service's sender: {0}")]
    Database(#[from] myelin_storage::sqlx::Error),
}

/// Who a token and its assertion stand for: an access token's owner (the
/// assertion ignored), or the user and device an application service
/// asserts. `401 M_UNKNOWN_TOKEN` for a token nobody holds; for a service,
/// `403 M_FORBIDDEN` for a user outside its namespaces or never
/// registered, `400 M_UNKNOWN_DEVICE` for a device the user lacks.
pub async fn identify(
    db: &Db,
    services: &AppServices,
    token_hash: &str,
    assertion: &Assertion,
) -> Result<Identity, ClientApiError> {
    if let Some(service) = services.by_token_hash(token_hash) {
        return assert_identity(db, service, assertion).await;
    }
    let owner = tokens::lookup(db, token_hash).await?.ok_or_else(MatrixError::unknown_token)?;
    let user_id = OwnedUserId::try_from(owner.user_id).map_err(|_| {
        tracing::error!("stored access token has an invalid user id");
        MatrixError::internal()
    })?;
    Ok(Identity {
        user_id,
        device_id: owner.device_id,
        is_guest: owner.is_guest,
        is_admin: owner.is_admin,
        expires_ms: owner.expires_ms.map(|ms| u64::try_from(ms).unwrap_or(0)),
        app_service: None,
    })
}

async fn assert_identity(db: &Db, service: &AppService, assertion: &Assertion) -> Result<Identity, ClientApiError> {
    let user_id = assertion.user_id.as_deref().unwrap_or(&service.sender);
    let user_id = OwnedUserId::try_from(user_id).map_err(|_| MatrixError::invalid_param("user_id is not a user ID"))?;
    if !service.is_user_in_namespace(user_id.as_str()) {
        return Err(MatrixError::forbidden("Application service cannot masquerade as this user").into());
    }
    // Namespaces hold only local users, but a regex may match any server.
    let local = accounts::exists(db, user_id.localpart()).await?;
    if !local || user_id.server_name() != service.sender.split_once(':').map_or("", |(_, server)| server) {
        return Err(MatrixError::forbidden("Application service has not registered this user").into());
    }
    let device_id = match &assertion.device_id {
        None => String::new(),
        Some(device_id) => {
            if devices::get(db, user_id.as_str(), device_id).await?.is_none() {
                return Err(MatrixError::new(ErrorCode::UnknownDevice, "The user has no such device").into());
            }
            device_id.clone()
        }
    };
    Ok(Identity {
        user_id,
        device_id,
        is_guest: false,
        is_admin: false,
        expires_ms: None,
        app_service: Some(service.id().to_owned()),
    })
}

/// The largest `origin_server_ts` the spec allows (a JSON-safe integer).
const MAX_TIMESTAMP: u64 = (1 << 53) - 1;

/// The `ts` query parameter of `/send` and `/state`.
#[derive(Debug, Deserialize)]
pub struct TimestampQuery {
    ts: Option<u64>,
}

impl TimestampQuery {
    /// The event's timestamp when an application service sets one (other
    /// callers' `ts` is ignored); `400 M_INVALID_PARAM` beyond what
    /// `origin_server_ts` may hold.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#timestamp-massaging>
    pub fn for_caller(&self, user: &AuthedUser) -> Result<Option<u64>, MatrixError> {
        match self.ts {
            Some(ts) if user.app_service.is_some() => {
                if ts > MAX_TIMESTAMP {
                    return Err(MatrixError::invalid_param("ts is larger than an event timestamp may be"));
                }
                Ok(Some(ts))
            }
            _ => Ok(None),
        }
    }
}
