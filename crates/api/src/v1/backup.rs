//! Bulk transfer of a container between hosts as vessel backup archives (the format of
//! `vessel backup`, docs/design.md "Backup format"): `GET /1.0/instances/{name}/backup`
//! streams an archive down, `POST /1.0/instances?name=NEW` takes one streamed up and
//! restores it (Incus's import of a backup is `POST /1.0/instances` with an
//! `application/octet-stream` body too). Neither body is held in memory: the download
//! is written to a temp file under `ROOT/serve/tmp/` (the backup writer's atomic file)
//! and streamed from it, then removed; the upload is read by the restore as it arrives.

use std::collections::HashMap;
use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use vessel_engine::backup::{self, CreateOptions};
use vessel_engine::Engine;
use vessel_image::reference::Reference;

use super::response::{sync, V1Result};
use super::V1;
use crate::docker::flag;
use crate::error::ApiError;

/// `GET /1.0/instances/{name}/backup?include_image=1&include_snapshots=1`: the
/// container's backup archive, streamed (`application/octet-stream`).
#[utoipa::path(get, path = "/1.0/instances/{name}/backup", tag = "backup",
    params(("name" = String, Path, description = "container name or id"),
        ("include_image" = Option<bool>, Query, description = "put the image's layers in the archive"),
        ("include_snapshots" = Option<bool>, Query, description = "put the container's snapshots in the archive")),
    responses((status = 200, description = "the archive (vessel backup format)", content_type = "application/octet-stream"),
        (status = 404, description = "no such container")))]
pub async fn download(
    State(st): State<V1>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> V1Result {
    let opts = CreateOptions {
        include_image: flag(q.get("include_image")),
        include_snapshots: flag(q.get("include_snapshots")),
    };
    let dir = crate::tls::serve_dir(&st.paths.root).join("tmp");
    let file = st
        .engine(move |e| {
            let r = e.find(&name)?;
            std::fs::create_dir_all(&dir)
                .map_err(|err| ApiError::internal(format!("create {}: {err}", dir.display())))?;
            let file = dir.join(format!("{}-{}.backup", r.id, std::process::id()));
            backup::create(e, &r.id, Some(&file), &opts)?;
            Ok(file)
        })
        .await?;
    let f = std::fs::File::open(&file).map_err(|e| ApiError::internal(format!("open {}: {e}", file.display())))?;
    // The name goes now: the open file streams on, and nothing is left if the client
    // goes away.
    let _ = std::fs::remove_file(&file);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut f = f;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The request body as a blocking reader, fed by the async side through a channel.
struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(format!("the upload broke: {e}"))),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// `POST /1.0/instances?name=NEW` with a backup archive as the body (streamed): makes
/// the container (state `exited`) as `vessel backup restore` does; the image comes from
/// the archive, the store, or a pull by digest. Metadata: `{"name", "id"}`.
#[utoipa::path(post, path = "/1.0/instances", tag = "backup",
    params(("name" = Option<String>, Query, description = "the new container's name [default: the one in the archive]")),
    request_body(content = Vec<u8>, description = "a vessel backup archive", content_type = "application/octet-stream"),
    responses((status = 200, description = "sync: {name, id} of the container made", body = super::response::Envelope),
        (status = 400, description = "not a whole archive, or the name is taken")))]
pub async fn upload(State(st): State<V1>, Query(q): Query<HashMap<String, String>>, body: Body) -> V1Result {
    let name = q.get("name").filter(|n| !n.is_empty()).cloned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(8);
    let feed = tokio::spawn(async move {
        let mut s = body.into_data_stream();
        while let Some(chunk) = s.next().await {
            let item = chunk.map_err(|e| e.to_string());
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let paths = st.paths.clone();
    let made = tokio::task::spawn_blocking(move || -> Result<(String, String), ApiError> {
        let e = Engine::open(paths)?;
        let mut reader = BodyReader { rx, cur: Bytes::new() };
        let mut pull = |store: &vessel_image::store::Store, reference: &str| {
            let reference = Reference::parse(reference)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| vessel_image::ImageError::io("start the async runtime", "", err))?;
            let rec = rt.block_on(vessel_image::pull::pull(
                store,
                &reference,
                &vessel_image::pull::PullOptions::default(),
                std::sync::Arc::new(vessel_image::pull::NoProgress),
            ));
            rt.shutdown_background();
            rec
        };
        let r = backup::restore(&e, &mut reader, "upload", name.as_deref(), &mut pull).map_err(|err| match err {
            vessel_engine::Error::Backup { .. } => ApiError::bad(err.to_string()),
            other => ApiError::from(other),
        })?;
        Ok((r.name, r.id))
    })
    .await
    .map_err(|e| ApiError::internal(format!("restore task failed: {e}")))?;
    feed.abort();
    let (name, id) = made?;
    Ok(sync(serde_json::json!({ "name": name, "id": id })))
}
