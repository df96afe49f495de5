//! EPTS's subscriptions to its transmitters (13/DSTP data samples, 14/TSTP data points), kept
//! equal to the live config's lists: a transmitter a config change adds is subscribed, a removed
//! one's handler stops after the events it is storing.

use std::collections::{BTreeMap, BTreeSet};

use kaa_bus::Bus;
use kaa_protocol::subject;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Config, EptsState, ServeError, ingest};
use crate::worker;

/// What EPTS receives from a transmitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Feed {
    Samples,
    Points,
}

/// The running subscriptions, each stopped by its own token.
#[derive(Debug, Default)]
pub(super) struct Feeds {
    running: BTreeMap<(Feed, String), CancellationToken>,
    handlers: TaskTracker,
}

fn wanted(config: &Config) -> BTreeSet<(Feed, String)> {
    let samples = config
        .data_sample_transmitters
        .iter()
        .map(|t| (Feed::Samples, t.clone()));
    let points = config
        .time_series_transmitters
        .iter()
        .map(|t| (Feed::Points, t.clone()));
    samples.chain(points).collect()
}

impl Feeds {
    /// Subscribes to the transmitters the config names now and stops following those it no
    /// longer names. `shutdown` stops them all.
    pub(super) async fn sync(
        &mut self,
        bus: &Bus,
        state: &EptsState,
        shutdown: &CancellationToken,
    ) -> Result<(), ServeError> {
        let config = state.config();
        let wanted = wanted(&config);
        self.running.retain(|feed, stop| {
            let keep = wanted.contains(feed);
            if !keep {
                tracing::info!(transmitter = feed.1, "EPTS stops following a transmitter");
                stop.cancel();
            }
            keep
        });
        for (feed, transmitter) in wanted {
            if self.running.contains_key(&(feed, transmitter.clone())) {
                continue;
            }
            let subject = match feed {
                Feed::Samples => subject::dstp_data_samples(&transmitter),
                Feed::Points => subject::tstp_data_points(&transmitter, "*"),
            };
            let sub = worker::subscribe(bus, subject, &config.instance, |subject, source| {
                ServeError::Subscribe { subject, source }
            })
            .await?;
            let stop = shutdown.child_token();
            let (bus, state, until) = (bus.clone(), state.clone(), stop.clone());
            let limit = config.max_in_flight;
            self.handlers.spawn(async move {
                match feed {
                    Feed::Samples => {
                        let handle = |msg| ingest::data_samples(bus.clone(), state.clone(), msg);
                        worker::run("epts.dstp", sub, limit, &until, handle).await;
                    }
                    Feed::Points => {
                        let handle = |msg| ingest::time_series(bus.clone(), state.clone(), msg);
                        worker::run("epts.tstp", sub, limit, &until, handle).await;
                    }
                }
            });
            self.running.insert((feed, transmitter), stop);
        }
        Ok(())
    }

    /// Waits for every handler, stopped or stopping, to finish its events in flight.
    pub(super) async fn wait(self) {
        self.handlers.close();
        self.handlers.wait().await;
    }
}
