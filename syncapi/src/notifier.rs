//! In-process wake-ups for long-polling `/sync`: the writer publishes the
//! newest stream position and pokes the users an event concerns; a waiting
//! request wakes within milliseconds instead of polling the database.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

pub struct Notifier {
    /// The highest stream position whose effects are committed.
    current: watch::Sender<i64>,
    /// Per waiting user: the position of the newest event that concerns them.
    users: Mutex<HashMap<String, watch::Sender<i64>>>,
}

impl Notifier {
    pub fn new(start: i64) -> Self {
        Self { current: watch::Sender::new(start), users: Mutex::default() }
    }

    /// The stream position readers may look up to.
    pub fn current(&self) -> i64 {
        *self.current.borrow()
    }

    /// Publish `pos` (already committed) and wake `users`' waiting requests.
    pub fn publish<'a>(&self, pos: i64, users: impl IntoIterator<Item = &'a String>) {
        self.current.send_if_modified(|current| {
            let newer = pos > *current;
            if newer {
                *current = pos;
            }
            newer
        });
        let waiting = self.users.lock().expect("notifier lock");
        for user in users {
            if let Some(sender) = waiting.get(user) {
                sender.send_if_modified(|seen| {
                    let newer = pos > *seen;
                    if newer {
                        *seen = pos;
                    }
                    newer
                });
            }
        }
    }

    /// Wait until something concerning `user` happened after `after`, or
    /// `timeout` passed. May wake spuriously; callers re-check.
    pub async fn wait(&self, user: &str, after: i64, timeout: std::time::Duration) {
        let mut receiver = {
            let mut waiting = self.users.lock().expect("notifier lock");
            // A fresh entry starts at the published position, so an event
            // committed between the caller's read and this call still wakes it.
            let current = self.current();
            waiting.entry(user.to_owned()).or_insert_with(|| watch::Sender::new(current)).subscribe()
        };
        if *receiver.borrow_and_update() <= after {
            let _ = tokio::time::timeout(timeout, receiver.changed()).await;
        }
        drop(receiver);
        let mut waiting = self.users.lock().expect("notifier lock");
        if waiting.get(user).is_some_and(|sender| sender.receiver_count() == 0) {
            waiting.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_only_the_concerned_user() {
        let notifier = Arc::new(Notifier::new(5));
        let n = notifier.clone();
        let waiter = tokio::spawn(async move { n.wait("@a:x", 5, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        notifier.publish(6, [&"@b:x".to_owned()]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        notifier.publish(7, [&"@a:x".to_owned()]);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert_eq!(notifier.current(), 7);
        assert!(notifier.users.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_event_before_waiting_returns_at_once() {
        let notifier = Notifier::new(5);
        notifier.publish(6, [&"@b:x".to_owned()]);
        // The caller computed its response at 5; the fresh entry starts at 6.
        tokio::time::timeout(Duration::from_secs(2), notifier.wait("@a:x", 5, Duration::from_secs(30))).await.unwrap();
    }
}
