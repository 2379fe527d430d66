//! Freeing large values off the critical path.

/// Drops `value` on a thread of its own. Freeing a build's tree, manifest and record (tens
/// of thousands of small allocations) took about 8 ms of a disk build's end here; a
/// command about to exit does not wait for it, and a longer-lived caller gets on with
/// its work. Only for values whose drop has no effect anyone waits for (no locks, no
/// temporary files).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    // Without a thread (none left to make), the value is dropped here, as it would have been.
    let _ = std::thread::Builder::new()
        .name("kiln-drop".into())
        .spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tells(std::sync::mpsc::Sender<std::thread::ThreadId>);

    impl Drop for Tells {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn the_value_is_dropped_on_another_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        drop_in_background(Tells(tx));
        let on = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("dropped");
        assert_ne!(on, std::thread::current().id());
    }
}
