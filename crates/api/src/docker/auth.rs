//! `POST /auth` (swagger SystemAuth, what `docker login` sends): checks a user name and
//! password against the registry with the same round trip a pull makes (the registry's
//! basic or token auth, [`vessel_image::pull::Registry::check_login`]). Nothing is
//! stored: the docker CLI keeps the credentials in its own config.json and sends them
//! with each pull and push (`X-Registry-Auth`), as with docker's daemon.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vessel_image::auth::Credentials;
use vessel_image::pull::{PullOptions, Registry};
use vessel_image::Reference;

use super::{json_body, Ctx};
use crate::error::{ApiError, ApiResult};

/// The body of `POST /auth` (docker's `AuthConfig`; its other fields are ignored).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    serveraddress: String,
}

/// The registry host a `serveraddress` names: `https://HOST[:PORT]/v1/` or `HOST[:PORT]`.
fn registry_host(address: &str) -> &str {
    let a = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    a.split('/').next().unwrap_or(a)
}

/// `POST /auth`: 200 `{"Status": "Login Succeeded", "IdentityToken": ""}` when the
/// registry takes the credentials; 401 with the registry's words when it refuses them
/// (or cannot be reached); 400 without a user name or server address.
pub async fn auth(State(ctx): State<Ctx>, body: Bytes) -> ApiResult<Json<Value>> {
    let b: AuthConfig = json_body(&body)?;
    if b.username.is_empty() {
        return Err(ApiError::bad("login needs a username"));
    }
    let host = registry_host(&b.serveraddress).to_string();
    if host.is_empty() {
        return Err(ApiError::bad("login needs a serveraddress: the registry's HOST[:PORT]"));
    }
    let reference = Reference::parse(&format!("{host}/vessel/login-check"))
        .map_err(|e| ApiError::bad(format!("serveraddress {:?}: {e}", b.serveraddress)))?;
    let opts = PullOptions {
        credentials: Some(Credentials {
            username: b.username,
            password: b.password,
        }),
        ..Default::default()
    };
    let reg = ctx
        .engine(move |e| {
            let store = e.store()?;
            Ok(Registry::connect(&store, &reference, &opts).map_err(vessel_engine::Error::from)?)
        })
        .await?;
    reg.check_login().await.map_err(|e| ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: e.to_string(),
    })?;
    Ok(Json(json!({"Status": "Login Succeeded", "IdentityToken": ""})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_forms() {
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(registry_host("http://reg.example:8080"), "reg.example:8080");
    }
}
