//! `syncapi_erased_users`: accounts deactivated with `erase`, kept in
//! memory too, as every served page asks about its events' senders.

use myelin_storage::{sqlx, with_db};

use super::Storage;
use crate::SyncApiError;

impl Storage {
    /// The erased accounts, read when the storage opens.
    pub(super) async fn load_erased(&self) -> Result<(), SyncApiError> {
        let users: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT user_id FROM syncapi_erased_users").fetch_all(pool).await?
        });
        self.erased.write().expect("erased users lock").extend(users);
        Ok(())
    }

    /// Remember that `user_id` asked to be erased (again is a no-op).
    pub async fn erase_user(&self, user_id: &str) -> Result<(), SyncApiError> {
        with_db!(&self.db, pool => {
            sqlx::query("INSERT INTO syncapi_erased_users (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
                .bind(user_id)
                .execute(pool)
                .await?;
        });
        self.erased.write().expect("erased users lock").insert(user_id.to_owned());
        Ok(())
    }

    pub fn is_erased(&self, user_id: &str) -> bool {
        self.erased.read().expect("erased users lock").contains(user_id)
    }
}
