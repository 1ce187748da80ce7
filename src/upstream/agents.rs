//! The ureq agents, one per worker thread, all built from one recipe per configuration and
//! sharing its connector chain — with the idle connections it keeps (idle.rs), its TLS client
//! configuration and session cache — and its resolver's answers. What is each thread's own is
//! only what ureq keeps per agent and locks twice a request: its pool, which holds nothing here.
//!
//! Why not one agent: its pool's lock is taken by every worker twice a request. Held briefly,
//! it was still contended on two cores with 30 runnable workers, and more so once our own
//! pool's lock was taken inside it (a connection returned while ureq holds its lock): 1.6
//! `futex` calls a request, and no gain from idle.rs at all. With an agent per thread its lock
//! is never contended, and our pool's lock is never taken inside another.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Uri;
use ureq::Agent;
use ureq::config::Config;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{ConnectionDetails, Connector, NextTimeout};

/// The recipes of one configuration: one for the agent every backend with default settings
/// uses, and one for each backend with a proxy, extra roots or timeouts of its own.
pub struct Agents {
    /// Tells these recipes from the ones a reload replaces, in each thread's cache.
    generation: u64,
    recipes: Vec<Recipe>,
}

/// Builds a thread's agent: its own (empty) ureq pool, everything else shared.
type Recipe = Box<dyn Fn() -> Agent + Send + Sync>;

/// A thread's agents, for the recipes of one generation.
struct Kept {
    generation: u64,
    agents: Vec<Option<Agent>>,
}

thread_local! {
    static KEPT: RefCell<Kept> = const {
        RefCell::new(Kept { generation: 0, agents: Vec::new() })
    };
}

/// Generation 0 is no configuration's: a thread's cache starts empty.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Agents {
    pub fn new() -> Self {
        Agents {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            recipes: Vec::new(),
        }
    }

    /// Adds a recipe; the index it returns names it in [`Agents::with`].
    pub fn add(
        &mut self,
        config: Config,
        connector: impl Connector,
        resolver: impl Resolver,
    ) -> usize {
        let connector = Arc::new(connector);
        let resolver = Arc::new(resolver);
        self.recipes.push(Box::new(move || {
            Agent::with_parts(
                config.clone(),
                Shared(Arc::clone(&connector)),
                Shared(Arc::clone(&resolver)),
            )
        }));
        self.recipes.len() - 1
    }

    /// Runs `f` with this thread's agent of recipe `index`, built on first use. A thread that
    /// meets a newer generation drops its agents for the old one.
    pub fn with<T>(&self, index: usize, f: impl FnOnce(&Agent) -> T) -> T {
        KEPT.with_borrow_mut(|kept| {
            if kept.generation != self.generation {
                kept.agents.clear();
                kept.agents.resize_with(self.recipes.len(), || None);
                kept.generation = self.generation;
            }
            let agent = kept.agents[index].get_or_insert_with(|| (self.recipes[index])());
            f(agent)
        })
    }
}

/// A connector or resolver shared by every thread's agent: ureq takes them by value, one per
/// agent.
struct Shared<T>(Arc<T>);

impl<T: Connector> Connector for Shared<T> {
    type Out = T::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        self.0.connect(details, chained)
    }
}

impl<T: Resolver> Resolver for Shared<T> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.0.resolve(uri, config, timeout)
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::DefaultConnector;

    fn agents(recipes: usize) -> Agents {
        let mut agents = Agents::new();
        for _ in 0..recipes {
            agents.add(
                Agent::config_builder().build(),
                DefaultConnector::default(),
                DefaultResolver::default(),
            );
        }
        agents
    }

    /// An agent's identity: the address of its shared config.
    fn id(agent: &Agent) -> *const Config {
        agent.config() as *const Config
    }

    #[test]
    fn a_thread_keeps_its_agent_per_recipe_and_others_get_their_own() {
        let agents = agents(2);
        let first = agents.with(0, id);
        assert_eq!(agents.with(0, id), first, "built again on the same thread");
        assert_ne!(agents.with(1, id), first, "two recipes share an agent");
        let elsewhere = std::thread::scope(|s| s.spawn(|| agents.with(0, id) as usize).join());
        assert_ne!(
            elsewhere.unwrap(),
            first as usize,
            "two threads share an agent"
        );
    }

    #[test]
    fn a_new_generation_replaces_the_agents_of_the_old_one() {
        let (old, new) = (agents(1), agents(1));
        // Held, so that no later agent can be built at its address.
        let first = old.with(0, Agent::clone);
        new.with(0, |_| ());
        let again = old.with(0, Agent::clone);
        assert_ne!(
            id(&again),
            id(&first),
            "the old generation's agent was kept"
        );
    }
}
