//! Image operations that need the container records too: removal refused for an
//! image that containers use (docker's `rmi` conflict), and tagging. What `vessel rmi`
//! and the API's `DELETE /images/{name}` and `POST /images/{name}/tag` share.

use vessel_image::{records, ImageRecord, Reference, Store};

use crate::db::Db;
use crate::error::{Error, Result};

/// Removes one image, or only the name `name` when the image has other names
/// (`docker rmi`). An image that containers of `db` use is refused unless `force`.
///
/// Errors: [`Error::ImageInUse`]; [`vessel_image::ImageError::ImageNotFound`] and store
/// errors (as [`Error::Image`]).
pub fn remove(store: &Store, db: Option<&Db>, name: &str, force: bool) -> Result<ImageRecord> {
    let rec = records::find_image(store, name)?;
    let untag_only = rec.names.len() > 1
        && Reference::parse(name)
            .ok()
            .is_some_and(|r| r.digest.is_none() && rec.names.contains(&r.to_string()));
    if !untag_only && !force {
        if let Some(db) = db {
            let users = db.using_image(&rec.id.to_string())?;
            if !users.is_empty() {
                let list: Vec<String> = users
                    .iter()
                    .map(|c| format!("{} ({})", c.name, &c.id[..c.id.len().min(12)]))
                    .collect();
                return Err(Error::ImageInUse {
                    image: name.to_string(),
                    containers: list,
                });
            }
        }
    }
    Ok(records::remove_image(store, name)?)
}

/// Gives the image `source` (name or id) the further name `target`
/// (`docker tag SOURCE TARGET`); a name held by another image moves to this one.
///
/// Errors: [`vessel_image::ImageError::ImageNotFound`],
/// [`vessel_image::ImageError::InvalidReference`] for a bad `target`, store errors.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<ImageRecord> {
    let mut rec = records::find_image(store, source)?;
    let target = Reference::parse(target)?;
    if target.digest.is_some() {
        return Err(Error::BadInput(format!(
            "cannot tag with a digest reference {target}: give NAME[:TAG]"
        )));
    }
    rec.names = vec![target.to_string()];
    Ok(records::add_image(store, rec)?)
}
