//! Background tasks owned by a handle: dropping the handle cancels the task,
//! [`OwnedTask::stop`] cancels it and waits until it has ended. Nothing is
//! left running detached.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned task that lives as long as this handle.
#[derive(Debug)]
pub struct OwnedTask {
    handle: Option<JoinHandle<()>>,
}

impl OwnedTask {
    /// Spawns `future` on the current runtime, owned by the returned handle.
    pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> Self {
        OwnedTask { handle: Some(tokio::spawn(future)) }
    }

    /// Cancels the task and waits until it has ended.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Whether the task has ended by itself.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_or_stopping_the_handle_ends_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = OwnedTask::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The task's end drops its sender.
        assert!(rx.await.is_err());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = OwnedTask::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        task.stop().await;
        assert!(rx.await.is_err());
    }
}
