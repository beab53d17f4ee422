//! The typed calls of [`Remote`]: the Docker API routes `vessel --remote` uses
//! (containers, logs, images, pull) and `/1.0` (info, resources, join, exec,
//! snapshots, backups).

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use super::{query_escape, ClientError, Remote};

impl Remote {
    /// `GET /1.0`.
    pub async fn info(&self) -> Result<Value, ClientError> {
        self.v1(Method::GET, "/1.0", None).await
    }

    /// `GET /1.0/resources`: the host's load.
    pub async fn resources(&self) -> Result<Value, ClientError> {
        self.v1(Method::GET, "/1.0/resources", None).await
    }

    /// `POST /1.0/certificates` with the token's secret (on a [`Remote::joining`]).
    pub async fn join(&self, certificate_pem: &str, secret: &str) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "certificate": certificate_pem, "trust_token": secret });
        self.v1(Method::POST, "/1.0/certificates", Some(&body)).await
    }

    /// `GET /containers/json` (`all`: stopped ones too).
    pub async fn containers(&self, all: bool) -> Result<Vec<Value>, ClientError> {
        self.docker(
            Method::GET,
            &format!("/v1.41/containers/json?all={}", u8::from(all)),
            None,
        )
        .await
    }

    /// `POST /containers/create` with docker's create body; the new id.
    pub async fn create(&self, name: Option<&str>, body: &Value) -> Result<String, ClientError> {
        let path = match name {
            Some(n) => format!("/v1.41/containers/create?name={}", query_escape(n)),
            None => "/v1.41/containers/create".into(),
        };
        let v: Value = self.docker(Method::POST, &path, Some(body)).await?;
        Ok(v["Id"].as_str().unwrap_or_default().to_string())
    }

    /// `POST /containers/{id}/start`.
    pub async fn start(&self, id: &str) -> Result<(), ClientError> {
        self.docker::<Value>(
            Method::POST,
            &format!("/v1.41/containers/{}/start", query_escape(id)),
            None,
        )
        .await
        .map(drop)
    }

    /// `POST /containers/{id}/stop?t=SECONDS`.
    pub async fn stop(&self, id: &str, timeout: Option<u32>) -> Result<(), ClientError> {
        let t = timeout.map(|t| format!("?t={t}")).unwrap_or_default();
        self.docker::<Value>(
            Method::POST,
            &format!("/v1.41/containers/{}/stop{t}", query_escape(id)),
            None,
        )
        .await
        .map(drop)
    }

    /// `DELETE /containers/{id}?force=`.
    pub async fn remove(&self, id: &str, force: bool) -> Result<(), ClientError> {
        let path = format!("/v1.41/containers/{}?force={}", query_escape(id), u8::from(force));
        self.docker::<Value>(Method::DELETE, &path, None).await.map(drop)
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<Value, ClientError> {
        self.docker(
            Method::GET,
            &format!("/v1.41/containers/{}/json", query_escape(id)),
            None,
        )
        .await
    }

    /// `POST /containers/{id}/wait`: the exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, ClientError> {
        let v: Value = self
            .docker(
                Method::POST,
                &format!("/v1.41/containers/{}/wait", query_escape(id)),
                None,
            )
            .await?;
        Ok(v["StatusCode"].as_i64().unwrap_or(-1))
    }

    /// `GET /containers/{id}/logs?stdout=1&stderr=1&follow=&tail=&timestamps=`: the
    /// answer, its body streamed (docker's multiplexed frames when the container has no
    /// tty). `tail`: the last N lines only.
    pub async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
        timestamps: bool,
    ) -> Result<Response<Incoming>, ClientError> {
        let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let path = format!(
            "/v1.41/containers/{}/logs?stdout=1&stderr=1&follow={}&tail={tail}&timestamps={}",
            query_escape(id),
            u8::from(follow),
            u8::from(timestamps)
        );
        let resp = self
            .request_stream(Method::GET, &path, "application/json", Body::empty())
            .await?;
        if resp.status().as_u16() >= 400 {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_default();
            return Err(ClientError::Api { status, message });
        }
        Ok(resp)
    }

    /// `GET /images/json`.
    pub async fn images(&self) -> Result<Vec<Value>, ClientError> {
        self.docker(Method::GET, "/v1.41/images/json", None).await
    }

    /// `POST /images/create?fromImage=REF`: pulls on the remote; the progress lines.
    pub async fn pull(&self, reference: &str) -> Result<Vec<Value>, ClientError> {
        // As the docker CLI sends it: the repository, and the tag or digest apart.
        let (image, tag) = match reference.split_once('@') {
            Some((repo, digest)) => (repo, Some(digest)),
            None => match reference.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
                _ => (reference, None),
            },
        };
        let mut path = format!("/v1.41/images/create?fromImage={}", query_escape(image));
        if let Some(t) = tag {
            path.push_str(&format!("&tag={}", query_escape(t)));
        }
        let (status, bytes) = self.request(Method::POST, &path, None).await?;
        let lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        if status.as_u16() >= 400 {
            let message = lines
                .first()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api { status, message });
        }
        if let Some(err) = lines.iter().find_map(|l| l["error"].as_str()) {
            return Err(ClientError::Api {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: err.to_string(),
            });
        }
        Ok(lines)
    }

    /// `POST /1.0/instances/{name}/exec`, waited for: the exit code and output.
    pub async fn exec(
        &self,
        name: &str,
        command: &[String],
        environment: &[(String, String)],
    ) -> Result<Value, ClientError> {
        let env: serde_json::Map<String, Value> = environment
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let body = serde_json::json!({ "command": command, "environment": env });
        self.v1(
            Method::POST,
            &format!("/1.0/instances/{}/exec", query_escape(name)),
            Some(&body),
        )
        .await
    }

    /// `GET /1.0/instances/{name}/backup`: the container's backup archive, its body
    /// streamed (hand it to [`Remote::backup_upload`] of another host to move the
    /// container without holding it anywhere).
    ///
    /// Errors: as [`Remote::request_stream`]; [`ClientError::Api`] for an error answer.
    pub async fn backup_download(&self, name: &str, include_image: bool) -> Result<Response<Incoming>, ClientError> {
        let path = format!(
            "/1.0/instances/{}/backup?include_image={}",
            query_escape(name),
            u8::from(include_image)
        );
        let resp = self
            .request_stream(Method::GET, &path, "application/json", Body::empty())
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_default();
        Err(ClientError::Api { status, message })
    }

    /// `POST /1.0/instances[?name=NEW]` with `archive` streamed up: restores the backup
    /// on this remote; `{"name", "id"}` of the container made.
    ///
    /// Errors: as [`Remote::v1`].
    pub async fn backup_upload<B>(&self, name: Option<&str>, archive: B) -> Result<Value, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = match name {
            Some(n) => format!("/1.0/instances?name={}", query_escape(n)),
            None => "/1.0/instances".into(),
        };
        let resp = self
            .request_stream(Method::POST, &path, "application/octet-stream", archive)
            .await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| self.http_error(source))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: path.clone(),
            detail: format!("{e} (HTTP {status})"),
        })?;
        match v["type"].as_str() {
            Some("sync") => Ok(v["metadata"].clone()),
            _ => Err(ClientError::Api {
                status,
                message: v["error"].as_str().unwrap_or("error").to_string(),
            }),
        }
    }

    /// `POST /1.0/instances/{name}/snapshots`, waited for: the snapshot made.
    pub async fn snapshot_create(
        &self,
        name: &str,
        snapshot: Option<&str>,
        stateful: bool,
    ) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "name": snapshot, "stateful": stateful });
        self.v1(
            Method::POST,
            &format!("/1.0/instances/{}/snapshots", query_escape(name)),
            Some(&body),
        )
        .await
    }
}
