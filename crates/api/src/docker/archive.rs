//! Files in and out of a container as tar streams (swagger: ContainerArchive,
//! PutContainerArchive): `GET /containers/{id}/archive?path=SRC` writes a tar of SRC
//! (its entry named by its last component, as docker writes it) and `PUT
//! /containers/{id}/archive?path=DIR[&copyUIDGID=1]` unpacks the request's tar into the
//! existing directory DIR. Both are the engine's `vessel cp -` streams
//! ([`vessel_engine::Engine::copy_out_tar`], [`vessel_engine::Engine::copy_in_tar`]):
//! names with `..` or through the container's symlinks are refused, nothing is written
//! outside DIR. What `vessel --remote NAME cp` uses.

use std::collections::HashMap;
use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use super::{flag, Ctx};
use crate::error::{ApiError, ApiResult};

fn path_of(q: &HashMap<String, String>) -> ApiResult<String> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad("archive needs path=PATH (inside the container)"))
}

/// A `Write` that sends its bytes as body chunks; the first write (or the end) tells
/// the handler the stream has begun, so that an error before it is an HTTP error.
struct Chunks {
    tx: mpsc::Sender<Bytes>,
    begun: Option<oneshot::Sender<ApiResult<()>>>,
}

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(b) = self.begun.take() {
            let _ = b.send(Ok(()));
        }
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /containers/{id}/archive?path=SRC`: 200 with `application/x-tar`; 400 when SRC
/// does not exist in the container, 404 for an unknown container.
pub async fn get(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let src = path_of(&q)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let (begun_tx, begun_rx) = oneshot::channel();
    let paths = ctx.paths.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            tx,
            begun: Some(begun_tx),
        };
        let done = vessel_engine::Engine::open(paths)
            .and_then(|e| {
                let r = e.find(&id)?;
                e.copy_out_tar(&r, &src, &mut out)
            })
            .map_err(ApiError::from);
        // Not begun: the error (or an empty success) is the answer itself.
        if let Some(b) = out.begun.take() {
            let _ = b.send(done);
        }
    });
    begun_rx
        .await
        .map_err(|_| ApiError::internal("archive task ended without an answer"))??;
    let body =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::convert::Infallible>)));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from_stream(body)).into_response())
}

/// A `Read` of the request body's chunks, handed over by the async side.
struct Incoming {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// `PUT /containers/{id}/archive?path=DIR&copyUIDGID=`: the body's tar unpacked into
/// DIR (which must exist); owners kept with `copyUIDGID`, else root. 200; 400 for a
/// missing DIR or an entry that leads out of it.
pub async fn put(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> ApiResult<Response> {
    let dest = path_of(&q)?;
    let archive = flag(q.get("copyUIDGID"));
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut body = req.into_body();
    let feed = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Err(()) };
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    ctx.engine(move |e| {
        let r = e.find(&id)?;
        let mut input = Incoming { rx, cur: Bytes::new() };
        e.copy_in_tar(&r, &mut input, &dest, archive)?;
        Ok(())
    })
    .await?;
    if let Ok(Err(())) = feed.await {
        return Err(ApiError::bad(
            "the request body ended early: the tar was not unpacked whole",
        ));
    }
    Ok(StatusCode::OK.into_response())
}
