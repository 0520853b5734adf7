//! Forwarded mutations leave for their owner in batches.
//!
//! Each peer has a queue and a task that sends what is queued: at most
//! [`MAX_IN_FLIGHT`] calls are in flight to one peer, and while they are,
//! newly forwarded mutations wait and then leave together in one
//! `MutateBatch` call. While a slot is free a mutation leaves at once, from
//! its caller's task, as a plain `Mutate`, so batching costs a quiet cluster
//! no latency; under load one HTTP/2
//! stream carries many mutations, which is what makes a forwarded mutation
//! cost about as much as a local one.
//!
//! A call's outcome applies to every mutation in it: a batch that was never
//! delivered (connection refused, stream refused) is retried by the router
//! like a single call would be.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use cart_grain::OwnedTask;

use crate::call::{COMPRESS_ABOVE_BYTES, with_deadline};
use crate::proto::cart::cart_actor_client::CartActorClient;
use crate::proto::cart::{MutationBatch, MutationReply, MutationRequest};

/// Calls in flight to one peer before forwarded mutations queue up.
pub const MAX_IN_FLIGHT: usize = 4;
/// Most mutations in one batch.
pub const MAX_BATCH: usize = 256;
/// Mutations waiting for one peer before forwarding waits for room.
const QUEUE: usize = 4096;

/// What a forwarded mutation gets back.
pub type Answer = Result<MutationReply, Status>;

struct Job {
    request: MutationRequest,
    reply: oneshot::Sender<Answer>,
}

/// The queue of mutations forwarded to one peer. Dropping its last clone
/// stops the peer's queue task (calls already sent finish by their
/// deadline).
#[derive(Clone)]
pub struct Forwarder {
    _task: Arc<OwnedTask>,
    jobs: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    channel: Channel,
    deadline: Duration,
}

impl Forwarder {
    /// Starts the sending task for a peer reached over `channel`, with this
    /// per-call deadline.
    pub fn start(channel: Channel, deadline: Duration) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let task = OwnedTask::spawn(run(channel.clone(), deadline, queue, Arc::clone(&slots)));
        Forwarder { _task: Arc::new(task), jobs, slots, channel, deadline }
    }

    /// Sends `request` to the peer, at once if a slot is free, else with the
    /// next batch, and waits for its reply.
    pub async fn mutate(&self, request: MutationRequest) -> Answer {
        // A released slot goes to the queue's task first when it waits for
        // one, so this never overtakes queued mutations for long.
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            let answer = call_one(self.channel.clone(), self.deadline, request).await;
            drop(slot);
            return answer;
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| Status::unavailable("the forwarder to this peer has stopped"))?;
        answer.await.map_err(|_| Status::unknown("the call to the peer was abandoned"))?
    }
}

async fn run(
    channel: Channel,
    deadline: Duration,
    mut queue: mpsc::Receiver<Job>,
    slots: Arc<Semaphore>,
) {
    // The batches in flight belong to this task: when it ends (its last
    // `Forwarder` is gone, so nobody waits for them) they are cancelled.
    let mut sending = JoinSet::new();
    while let Some(first) = queue.recv().await {
        while sending.try_join_next().is_some() {}
        // Waiting for a free slot is what lets a batch form.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let channel = channel.clone();
        sending.spawn(async move {
            send(channel, deadline, jobs).await;
            drop(slot);
        });
    }
}

/// A client that compresses its request when a mutation in it is large:
/// compression pays for a large cart, not for many small mutations.
fn client<'a>(
    channel: Channel,
    mut requests: impl Iterator<Item = &'a MutationRequest>,
) -> CartActorClient<Channel> {
    let client = CartActorClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
    if requests.any(|r| wire_size(r) > COMPRESS_ABOVE_BYTES) {
        client.send_compressed(CompressionEncoding::Gzip)
    } else {
        client
    }
}

async fn call_one(channel: Channel, deadline: Duration, request: MutationRequest) -> Answer {
    let mut client = client(channel, std::iter::once(&request));
    client.mutate(with_deadline(request, deadline)).await.map(tonic::Response::into_inner)
}

async fn send(channel: Channel, deadline: Duration, mut jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.remove(0);
        let _ = job.reply.send(call_one(channel, deadline, job.request).await);
        return;
    }
    let (requests, replies): (Vec<_>, Vec<_>) =
        jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
    let count = requests.len();
    let mut client = client(channel, requests.iter());
    let answer = client.mutate_batch(with_deadline(MutationBatch { requests }, deadline)).await;
    match answer.map(tonic::Response::into_inner) {
        Ok(batch) if batch.replies.len() == count => {
            for (reply, answer) in replies.into_iter().zip(batch.replies) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(batch) => {
            let status = Status::internal(format!(
                "the peer answered {} of {count} batched mutations",
                batch.replies.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// The payload bytes of a request (what compression would act on).
fn wire_size(request: &MutationRequest) -> usize {
    request.payload.len() + request.more.iter().map(|m| m.payload.len()).sum::<usize>()
}
