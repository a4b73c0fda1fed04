//! The metadata group's state machine: the catalog, changed by applying committed entries,
//! and published for planning, which reads it without waiting on anything.
//!
//! Snapshots are the catalog as JSON (`snapshot.json`, written atomically and fsynced, with
//! the format version); a restarted member loads its snapshot and openraft re-applies the
//! committed entries after it.

use super::{MetaRequest, MetaResponse, MetaTypes, META_FORMAT_VERSION};
use crate::catalog::Catalog;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

type C = MetaTypes;

/// The catalog as the coordinator's planner sees it: the last applied state.
pub type Published = Arc<RwLock<Arc<Catalog>>>;

/// `snapshot.json`.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    meta: SnapshotMetaOf<C>,
    catalog: Catalog,
}

struct Inner {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    catalog: Catalog,
    /// The last snapshot built or installed: (meta, catalog JSON).
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// The state machine; clones share it (a clone is the snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    published: Published,
    dir: PathBuf,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    /// Opens the state machine from `dir/snapshot.json`, if there is one.
    pub fn open(dir: &Path) -> io::Result<StateMachine> {
        let path = dir.join("snapshot.json");
        let (last_applied, membership, catalog, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: SnapshotFile = serde_json::from_slice(&bytes).map_err(other)?;
                if f.version != META_FORMAT_VERSION {
                    return Err(other(format!(
                        "{} has format {}, this build reads {META_FORMAT_VERSION}",
                        path.display(),
                        f.version
                    )));
                }
                let data = serde_json::to_vec(&f.catalog).map_err(other)?;
                (
                    f.meta.last_log_id,
                    f.meta.last_membership.clone(),
                    f.catalog,
                    Some((f.meta, data)),
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (None, Default::default(), Catalog::default(), None)
            }
            Err(e) => return Err(e),
        };
        Ok(StateMachine {
            published: Arc::new(RwLock::new(Arc::new(catalog.clone()))),
            inner: Arc::new(Mutex::new(Inner {
                last_applied,
                membership,
                catalog,
                snapshot,
            })),
            dir: dir.to_path_buf(),
        })
    }

    /// The published catalog, shared with the [`super::store::RaftCatalog`].
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| other("state machine lock poisoned"))
    }

    fn publish(&self, catalog: &Catalog) {
        if let Ok(mut p) = self.published.write() {
            *p = Arc::new(catalog.clone());
        }
    }

    /// Writes `snapshot.json` atomically (fsynced), on a blocking thread.
    async fn persist(&self, meta: SnapshotMetaOf<C>, catalog: Catalog) -> io::Result<()> {
        let path = self.dir.join("snapshot.json");
        let file = SnapshotFile {
            version: META_FORMAT_VERSION,
            meta,
            catalog,
        };
        let bytes = serde_json::to_vec(&file).map_err(other)?;
        tokio::task::spawn_blocking(move || tessera_shared::fsutil::write_atomically(&path, &bytes))
            .await
            .map_err(other)?
    }
}

/// Applies one request to `catalog`; a refused command leaves it unchanged.
fn apply_request(catalog: &mut Catalog, req: MetaRequest, index: u64) -> MetaResponse {
    let mut resp = MetaResponse {
        index,
        ..MetaResponse::default()
    };
    match req {
        MetaRequest::Command(cmd) => {
            let mut next = catalog.clone();
            match next.apply(*cmd) {
                Ok(()) => *catalog = next,
                Err(e) => resp.error = Some((e.sqlstate().to_string(), e.to_string())),
            }
        }
        MetaRequest::ReserveIds(n) => {
            resp.first_id = catalog.next_id;
            catalog.next_id += n;
        }
        MetaRequest::Seed(seed) => {
            if catalog.tables.is_empty() && catalog.nodes.is_empty() && catalog.roles.is_empty() {
                *catalog = *seed;
            }
        }
    }
    resp
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let (meta, catalog) = {
            let inner = self.lock()?;
            (
                SnapshotMetaOf::<C> {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                },
                inner.catalog.clone(),
            )
        };
        let data = serde_json::to_vec(&catalog).map_err(other)?;
        self.persist(meta.clone(), catalog).await?;
        self.lock()?.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.lock()?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let resp = {
                let mut inner = self.lock()?;
                inner.last_applied = Some(entry.log_id);
                let index = entry.log_id.index();
                let resp = match entry.payload {
                    EntryPayload::Blank => MetaResponse {
                        index,
                        ..MetaResponse::default()
                    },
                    EntryPayload::Normal(req) => apply_request(&mut inner.catalog, req, index),
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m);
                        MetaResponse {
                            index,
                            ..MetaResponse::default()
                        }
                    }
                };
                self.publish(&inner.catalog);
                resp
            };
            if let Some(responder) = responder {
                responder.send(resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let catalog: Catalog = serde_json::from_slice(&data).map_err(other)?;
        self.persist(meta.clone(), catalog.clone()).await?;
        let mut inner = self.lock()?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.catalog = catalog;
        inner.snapshot = Some((meta.clone(), data));
        self.publish(&inner.catalog);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let inner = self.lock()?;
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<C, Cursor<Vec<u8>>> {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogCommand;

    #[test]
    fn refused_commands_change_nothing_and_ids_are_reserved_in_order() {
        let mut c = Catalog::default();
        let r = apply_request(
            &mut c,
            MetaRequest::Command(Box::new(CatalogCommand::DropTable {
                name: "nope".into(),
                cascade: false,
            })),
            7,
        );
        assert_eq!(r.index, 7);
        assert_eq!(r.error.as_ref().map(|e| e.0.as_str()), Some("42P01"));
        assert_eq!(c, Catalog::default());
        let first = apply_request(&mut c, MetaRequest::ReserveIds(3), 8).first_id;
        let second = apply_request(&mut c, MetaRequest::ReserveIds(1), 9).first_id;
        assert_eq!(second, first + 3);
        // A seed only takes when the group's catalog is empty.
        let seeded = Catalog {
            next_id: 1000,
            ..Catalog::default()
        };
        apply_request(&mut c, MetaRequest::Seed(Box::new(seeded.clone())), 10);
        assert_eq!(c, seeded);
    }
}
