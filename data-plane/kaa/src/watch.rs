//! Watching a config file for edits by polling its content: a Kubernetes ConfigMap volume
//! changes by swapping a symlink (the inode and mtime of the path the process opened say
//! nothing), and an editor may replace the file rather than write it; comparing the bytes read
//! through the path catches both, for the price of reading a small file twice a second.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `changed` with the file's new content each time it differs from the previous read,
/// starting from `started_with` (what the process loaded), until `stop`. An unreadable file
/// (mid-swap, deleted) is skipped until it reads again.
pub async fn file(
    path: PathBuf,
    started_with: Vec<u8>,
    every: Duration,
    stop: CancellationToken,
    mut changed: impl FnMut(Vec<u8>) + Send,
) {
    let mut last = Some(started_with);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(content) = tokio::fs::read(&path).await else {
            continue;
        };
        if last.as_ref() != Some(&content) {
            last = Some(content.clone());
            changed(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn reports_each_new_content_once_and_survives_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "a").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, sink) = (CancellationToken::new(), seen.clone());
        let watching = tokio::spawn(file(
            path.clone(),
            b"a".to_vec(),
            Duration::from_millis(10),
            stop.clone(),
            move |c| {
                sink.lock().unwrap().push(String::from_utf8(c).unwrap());
            },
        ));
        let wait_for = |n: usize| {
            let seen = seen.clone();
            async move {
                for _ in 0..500 {
                    if seen.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("never saw {n} changes: {:?}", seen.lock().unwrap());
            }
        };
        std::fs::write(&path, "b").unwrap();
        wait_for(1).await;
        std::fs::remove_file(&path).unwrap();
        // Replaced the way a ConfigMap volume does it: a new file renamed over the path.
        let next = dir.path().join("next");
        std::fs::write(&next, "c").unwrap();
        std::fs::rename(&next, &path).unwrap();
        wait_for(2).await;
        stop.cancel();
        watching.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["b", "c"]);
    }
}
