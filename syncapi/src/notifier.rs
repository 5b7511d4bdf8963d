//! In-process wake-ups for long-polling `/sync`: writers publish the newest
//! position of their stream and poke the users a change concerns; a waiting
//! request wakes within milliseconds instead of polling the database.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::token::{Stream, SyncToken};

pub struct Notifier {
    /// The highest position of each stream whose effects are committed.
    current: watch::Sender<SyncToken>,
    /// Per waiting user: the positions of the newest changes that concern them.
    users: Mutex<HashMap<String, watch::Sender<SyncToken>>>,
}

/// Raise `stream` of `token` to `pos`; `true` if it moved.
fn advance(token: &mut SyncToken, stream: Stream, pos: i64) -> bool {
    let slot = token.get_mut(stream);
    let newer = pos > *slot;
    if newer {
        *slot = pos;
    }
    newer
}

impl Notifier {
    pub fn new(start: SyncToken) -> Self {
        Self { current: watch::Sender::new(start), users: Mutex::default() }
    }

    /// The positions readers may look up to.
    pub fn current(&self) -> SyncToken {
        *self.current.borrow()
    }

    /// Publish `pos` of `stream` (already committed) and wake `users`' waiting requests.
    pub fn publish<'a>(&self, stream: Stream, pos: i64, users: impl IntoIterator<Item = &'a String>) {
        self.current.send_if_modified(|current| advance(current, stream, pos));
        let waiting = self.users.lock().expect("notifier lock");
        for user in users {
            if let Some(sender) = waiting.get(user) {
                sender.send_if_modified(|seen| advance(seen, stream, pos));
            }
        }
    }

    /// Wait until something concerning `user` happened after `after`, or
    /// `timeout` passed. May wake spuriously; callers re-check.
    pub async fn wait(&self, user: &str, after: SyncToken, timeout: std::time::Duration) {
        let mut receiver = {
            let mut waiting = self.users.lock().expect("notifier lock");
            // A fresh entry starts at the published positions, so a change
            // committed between the caller's read and this call still wakes it.
            let current = self.current();
            waiting.entry(user.to_owned()).or_insert_with(|| watch::Sender::new(current)).subscribe()
        };
        if !receiver.borrow_and_update().any_after(&after) {
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

    fn at(events: i64) -> SyncToken {
        SyncToken { events, ..SyncToken::default() }
    }

    #[tokio::test]
    async fn wakes_only_the_concerned_user() {
        let notifier = Arc::new(Notifier::new(at(5)));
        let n = notifier.clone();
        let waiter = tokio::spawn(async move { n.wait("@a:x", at(5), Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        notifier.publish(Stream::Events, 6, [&"@b:x".to_owned()]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        notifier.publish(Stream::Events, 7, [&"@a:x".to_owned()]);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert_eq!(notifier.current(), at(7));
        assert!(notifier.users.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_event_before_waiting_returns_at_once() {
        let notifier = Notifier::new(at(5));
        notifier.publish(Stream::Events, 6, [&"@b:x".to_owned()]);
        // The caller computed its response at 5; the fresh entry starts at 6.
        tokio::time::timeout(Duration::from_secs(2), notifier.wait("@a:x", at(5), Duration::from_secs(30)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn other_streams_wake_too() {
        let notifier = Arc::new(Notifier::new(at(5)));
        let n = notifier.clone();
        let waiter = tokio::spawn(async move { n.wait("@a:x", at(5), Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        notifier.publish(Stream::Typing, 1, [&"@a:x".to_owned()]);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert_eq!(notifier.current(), SyncToken { events: 5, typing: 1, ..SyncToken::default() });
    }
}
