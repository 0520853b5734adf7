//! Load for fault tests: writers adding one unit at a time to their own
//! carts through whichever live node the test's "load balancer" lists, and
//! the tally of what was acknowledged and what failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::{SKU_A, Server, client};

/// How many members `s`'s view holds (0 when it does not answer).
pub async fn member_count(s: &Server) -> usize {
    super::member_hosts(s).await.len()
}

/// What the writers saw.
#[derive(Default)]
pub struct Tally {
    /// Adds acknowledged, per cart.
    pub acked: HashMap<String, u64>,
    /// Adds that failed (they may or may not have applied), per cart.
    pub uncertain: HashMap<String, u64>,
    /// Latency of every acknowledged add.
    pub latencies_us: Vec<u64>,
    /// What each failure said.
    pub errors: Vec<String>,
}

/// Writers adding one unit at a time to their own cart through whichever
/// node `pick` chooses, until `stop`.
pub fn start_writers(
    writers: usize,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (urls, stop, tally) = (Arc::clone(&urls), Arc::clone(&stop), Arc::clone(&tally));
            tokio::spawn(async move {
                let http = client();
                let mut i = w;
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // A new cart every 900 adds keeps lines under the 999 limit.
                    let cart = format!("w{w}-{}", sent / 900);
                    sent += 1;
                    let url = {
                        let urls = urls.lock().unwrap();
                        i += 1;
                        urls[i % urls.len()].clone()
                    };
                    let started = Instant::now();
                    let r = http
                        .post(format!("{url}/api/carts/{cart}/items"))
                        .json(&json!({"sku": SKU_A}))
                        .send()
                        .await;
                    let r = match r {
                        Ok(r) if r.status() != 200 => Err(format!(
                            "{} from {url}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Ok(r) => Ok(r),
                        Err(e) => Err(format!("{e} from {url}")),
                    };
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok(_) => {
                            *t.acked.entry(cart.clone()).or_default() += 1;
                            t.latencies_us.push(started.elapsed().as_micros() as u64);
                        }
                        Err(why) => {
                            *t.uncertain.entry(cart.clone()).or_default() += 1;
                            t.errors.push(why);
                        }
                    }
                }
            })
        })
        .collect()
}
