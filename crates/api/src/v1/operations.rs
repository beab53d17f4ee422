//! Long work as operations (Incus's `/1.0/operations`): a task runs in tokio's
//! blocking pool; `GET /1.0/operations/{id}` shows it, `GET .../wait?timeout=S`
//! waits for its end. Operations live in the server's memory (as Incus's do) and the
//! last 256 finished ones are kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::error::ApiError;

/// How many finished operations are remembered.
const KEEP_FINISHED: usize = 256;

/// An operation, as `GET /1.0/operations/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// Its id (32 hex digits).
    pub id: String,
    /// Always `task`.
    pub class: String,
    /// What it does (`Creating snapshot`).
    pub description: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// `Running`, `Success` or `Failure`.
    pub status: String,
    /// 103 running, 200 success, 400 failure (Incus's codes).
    pub status_code: u16,
    /// What it concerns: `{"instances": ["/1.0/instances/NAME"]}`.
    pub resources: BTreeMap<String, Vec<String>>,
    /// Its result once it succeeded (the snapshot made, an exec's output), else null.
    pub metadata: serde_json::Value,
    /// Whether it can be cancelled (never, here).
    pub may_cancel: bool,
    /// Why it failed, else empty.
    pub err: String,
}

struct Entry {
    op: Operation,
    done: watch::Receiver<bool>,
}

/// The server's operations.
#[derive(Clone, Default)]
pub struct Operations {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    crate::tls::hex(&b)
}

impl Operations {
    /// Starts `work` in the blocking pool as a new operation and returns it as it is
    /// now (running).
    pub fn spawn(
        &self,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        work: impl FnOnce() -> Result<serde_json::Value, ApiError> + Send + 'static,
    ) -> Operation {
        let t = now();
        let op = Operation {
            id: new_id(),
            class: "task".into(),
            description: description.into(),
            created_at: t.clone(),
            updated_at: t,
            status: "Running".into(),
            status_code: 103,
            resources,
            metadata: serde_json::Value::Null,
            may_cancel: false,
            err: String::new(),
        };
        let (tx, rx) = watch::channel(false);
        if let Ok(mut m) = self.inner.lock() {
            prune(&mut m);
            m.insert(
                op.id.clone(),
                Entry {
                    op: op.clone(),
                    done: rx,
                },
            );
        }
        let ops = self.clone();
        let id = op.id.clone();
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(work)
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(format!("operation task failed: {e}"))));
            if let Ok(mut m) = ops.inner.lock() {
                if let Some(e) = m.get_mut(&id) {
                    e.op.updated_at = now();
                    match result {
                        Ok(v) => {
                            e.op.status = "Success".into();
                            e.op.status_code = 200;
                            e.op.metadata = v;
                        }
                        Err(err) => {
                            e.op.status = "Failure".into();
                            e.op.status_code = 400;
                            e.op.err = err.message;
                        }
                    }
                }
            }
            let _ = tx.send(true);
        });
        op
    }

    /// The operation `id` as it is now.
    pub fn get(&self, id: &str) -> Option<Operation> {
        self.inner.lock().ok()?.get(id).map(|e| e.op.clone())
    }

    /// The ids of every operation known, newest last.
    pub fn ids(&self) -> Vec<String> {
        let Ok(m) = self.inner.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = m.values().map(|e| (e.op.created_at.clone(), e.op.id.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Waits until `id` ends, or `timeout` passes (None: no limit); the operation as it
    /// is then, or None when there is no such operation.
    pub async fn wait(&self, id: &str, timeout: Option<std::time::Duration>) -> Option<Operation> {
        let mut rx = self.inner.lock().ok()?.get(id)?.done.clone();
        let until_done = async {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, until_done).await;
            }
            None => until_done.await,
        }
        self.get(id)
    }
}

fn prune(m: &mut HashMap<String, Entry>) {
    let mut finished: Vec<(String, String)> = m
        .values()
        .filter(|e| e.op.status_code != 103)
        .map(|e| (e.op.updated_at.clone(), e.op.id.clone()))
        .collect();
    if finished.len() < KEEP_FINISHED {
        return;
    }
    finished.sort();
    for (_, id) in finished.iter().take(finished.len() + 1 - KEEP_FINISHED) {
        m.remove(id);
    }
}
