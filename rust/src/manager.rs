//! The broadcast registry, without Python: connections, channels and who is in which.
//!
//! Indexed both ways, so joining and leaving are O(1) and removing a connection is O(its
//! channels). Fan-out reads a snapshot: the members of a channel with their writers, sorted by
//! id, built on first use and kept until the membership changes. A snapshot is shared, so a
//! writer that changes the registry while a fan-out runs does not disturb it.
//!
//! Snapshots hold their own copies of the writers (made by the caller, who knows how to copy
//! one), so fan-out reads each member from one contiguous array.
//!
//! Mutations hand back what they released ([`Released`]) instead of dropping it: the caller
//! drops it once it has let go of the registry, because dropping a Python writer can run
//! arbitrary code, including code that calls back into the registry.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub type ConnId = i64;

/// A channel member as fan-out sees it.
#[derive(Debug)]
pub struct Member<W> {
    pub id: ConnId,
    pub writer: W,
}

/// Members sorted by id; shared between the registry's cache and running fan-outs.
pub type Snapshot<W> = Arc<[Member<W>]>;

/// Values a mutation took out of the registry, to be dropped by the caller.
#[derive(Debug)]
#[must_use = "drop it after releasing the registry"]
pub struct Released<W> {
    _writer: Option<W>,
    _snapshots: Vec<Snapshot<W>>,
}

impl<W> Released<W> {
    fn new(writer: Option<W>, snapshots: impl IntoIterator<Item = Option<Snapshot<W>>>) -> Self {
        Released {
            _writer: writer,
            _snapshots: snapshots.into_iter().flatten().collect(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegistryError {
    DuplicateConnection(ConnId),
    UnknownConnection(ConnId),
    UnknownChannel(String),
}

struct Connection<W> {
    writer: W,
    channels: HashSet<Arc<str>>,
}

struct Channel<W> {
    name: Arc<str>,
    members: HashSet<ConnId>,
    snapshot: Option<Snapshot<W>>,
}

pub struct Registry<W> {
    connections: HashMap<ConnId, Connection<W>>,
    channels: HashMap<Arc<str>, Channel<W>>,
    everyone: Option<Snapshot<W>>,
}

impl<W> Default for Registry<W> {
    fn default() -> Self {
        Registry {
            connections: HashMap::new(),
            channels: HashMap::new(),
            everyone: None,
        }
    }
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort_unstable();
    items
}

impl<W> Registry<W> {
    pub fn add_connection(&mut self, id: ConnId, writer: W) -> Result<Released<W>, RegistryError> {
        match self.connections.entry(id) {
            Entry::Occupied(_) => Err(RegistryError::DuplicateConnection(id)),
            Entry::Vacant(slot) => {
                slot.insert(Connection {
                    writer,
                    channels: HashSet::new(),
                });
                Ok(Released::new(None, [self.everyone.take()]))
            }
        }
    }

    /// Removes a connection from the registry and from every channel it had joined.
    pub fn remove_connection(&mut self, id: ConnId) -> Option<Released<W>> {
        let connection = self.connections.remove(&id)?;
        let mut snapshots = vec![self.everyone.take()];
        for name in &connection.channels {
            if let Some(channel) = self.channels.get_mut(name) {
                channel.members.remove(&id);
                snapshots.push(channel.snapshot.take());
            }
        }
        Some(Released::new(Some(connection.writer), snapshots))
    }

    pub fn has_connection(&self, id: ConnId) -> bool {
        self.connections.contains_key(&id)
    }

    pub fn create_channel(&mut self, name: &str) -> bool {
        if self.channels.contains_key(name) {
            return false;
        }
        let name: Arc<str> = Arc::from(name);
        let channel = Channel {
            name: Arc::clone(&name),
            members: HashSet::new(),
            snapshot: None,
        };
        self.channels.insert(name, channel);
        true
    }

    /// Deletes a channel; its members stay connected.
    pub fn remove_channel(&mut self, name: &str) -> Option<Released<W>> {
        let channel = self.channels.remove(name)?;
        for id in &channel.members {
            if let Some(connection) = self.connections.get_mut(id) {
                connection.channels.remove(name);
            }
        }
        Some(Released::new(None, [channel.snapshot]))
    }

    pub fn channels(&self) -> Vec<&str> {
        sorted(self.channels.keys().map(|name| &**name).collect())
    }

    /// Adds a connection to a channel; false if it was already a member.
    pub fn join(&mut self, id: ConnId, name: &str) -> Result<(bool, Released<W>), RegistryError> {
        let connection = self
            .connections
            .get_mut(&id)
            .ok_or(RegistryError::UnknownConnection(id))?;
        let channel = self
            .channels
            .get_mut(name)
            .ok_or_else(|| RegistryError::UnknownChannel(name.to_owned()))?;
        if !channel.members.insert(id) {
            return Ok((false, Released::new(None, [])));
        }
        connection.channels.insert(Arc::clone(&channel.name));
        Ok((true, Released::new(None, [channel.snapshot.take()])))
    }

    /// Takes a connection out of a channel; false if it was not a member (or either is unknown).
    pub fn leave(&mut self, id: ConnId, name: &str) -> (bool, Released<W>) {
        let Some(channel) = self.channels.get_mut(name) else {
            return (false, Released::new(None, []));
        };
        if !channel.members.remove(&id) {
            return (false, Released::new(None, []));
        }
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.channels.remove(name);
        }
        (true, Released::new(None, [channel.snapshot.take()]))
    }

    /// Sorted ids of a channel's members, or of every connection.
    pub fn members(&self, channel: Option<&str>) -> Result<Vec<ConnId>, RegistryError> {
        Ok(match channel {
            None => sorted(self.connections.keys().copied().collect()),
            Some(name) => sorted(self.channel(name)?.members.iter().copied().collect()),
        })
    }

    pub fn count(&self, channel: Option<&str>) -> Result<usize, RegistryError> {
        Ok(match channel {
            None => self.connections.len(),
            Some(name) => self.channel(name)?.members.len(),
        })
    }

    pub fn channels_of(&self, id: ConnId) -> Result<Vec<&str>, RegistryError> {
        let connection = self
            .connections
            .get(&id)
            .ok_or(RegistryError::UnknownConnection(id))?;
        Ok(sorted(
            connection.channels.iter().map(|name| &**name).collect(),
        ))
    }

    /// The members of a channel (or every connection) with copies of their writers, sorted by id.
    pub fn snapshot(
        &mut self,
        channel: Option<&str>,
        copy: impl Fn(&W) -> W,
    ) -> Result<Snapshot<W>, RegistryError> {
        let (ids, cache) = match channel {
            None => (None, &mut self.everyone),
            Some(name) => {
                let channel = self
                    .channels
                    .get_mut(name)
                    .ok_or_else(|| RegistryError::UnknownChannel(name.to_owned()))?;
                (Some(&channel.members), &mut channel.snapshot)
            }
        };
        if let Some(snapshot) = cache {
            return Ok(Arc::clone(snapshot));
        }
        let connections = &self.connections;
        let mut members: Vec<Member<W>> = match ids {
            None => connections
                .iter()
                .map(|(&id, connection)| Member {
                    id,
                    writer: copy(&connection.writer),
                })
                .collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|&id| {
                    let writer = copy(&connections.get(&id)?.writer);
                    Some(Member { id, writer })
                })
                .collect(),
        };
        members.sort_unstable_by_key(|member| member.id);
        let snapshot: Snapshot<W> = members.into();
        *cache = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Every writer the registry holds: each connection's, then the copies in cached snapshots.
    pub fn writers(&self) -> impl Iterator<Item = &W> {
        let cached = self
            .channels
            .values()
            .filter_map(|channel| channel.snapshot.as_ref())
            .chain(&self.everyone);
        self.connections
            .values()
            .map(|connection| &connection.writer)
            .chain(cached.flat_map(|snapshot| snapshot.iter().map(|member| &member.writer)))
    }

    fn channel(&self, name: &str) -> Result<&Channel<W>, RegistryError> {
        self.channels
            .get(name)
            .ok_or_else(|| RegistryError::UnknownChannel(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(snapshot: &Snapshot<&'static str>) -> Vec<(ConnId, &'static str)> {
        snapshot
            .iter()
            .map(|member| (member.id, member.writer))
            .collect()
    }

    fn registry() -> Registry<&'static str> {
        let mut registry = Registry::default();
        for (id, writer) in [(3, "c"), (1, "a"), (2, "b")] {
            drop(registry.add_connection(id, writer).unwrap());
        }
        registry.create_channel("room");
        registry
    }

    #[test]
    fn connections_are_unique() {
        let mut registry = registry();
        assert!(matches!(
            registry.add_connection(1, "again"),
            Err(RegistryError::DuplicateConnection(1))
        ));
        assert!(registry.has_connection(1));
        assert!(registry.remove_connection(1).is_some());
        assert!(registry.remove_connection(1).is_none());
        assert!(!registry.has_connection(1));
        assert_eq!(registry.members(None).unwrap(), [2, 3]);
    }

    #[test]
    fn membership_is_indexed_both_ways() {
        let mut registry = registry();
        registry.create_channel("lobby");
        assert!(!registry.create_channel("room"));
        assert!(registry.join(2, "room").unwrap().0);
        assert!(!registry.join(2, "room").unwrap().0);
        assert!(registry.join(2, "lobby").unwrap().0);
        assert!(registry.join(1, "room").unwrap().0);
        assert_eq!(registry.members(Some("room")).unwrap(), [1, 2]);
        assert_eq!(registry.channels_of(2).unwrap(), ["lobby", "room"]);
        assert_eq!(registry.count(Some("room")).unwrap(), 2);
        assert!(registry.leave(2, "room").0);
        assert!(!registry.leave(2, "room").0);
        assert!(!registry.leave(9, "room").0);
        assert!(!registry.leave(2, "nowhere").0);
        assert_eq!(registry.channels_of(2).unwrap(), ["lobby"]);
        assert_eq!(registry.channels(), ["lobby", "room"]);
    }

    #[test]
    fn unknown_names_are_errors() {
        let mut registry = registry();
        assert_eq!(
            registry.join(9, "room").unwrap_err(),
            RegistryError::UnknownConnection(9)
        );
        assert_eq!(
            registry.join(1, "nowhere").unwrap_err(),
            RegistryError::UnknownChannel("nowhere".into())
        );
        assert!(registry.members(Some("nowhere")).is_err());
        assert!(registry.count(Some("nowhere")).is_err());
        assert!(registry.snapshot(Some("nowhere"), Clone::clone).is_err());
        assert_eq!(
            registry.channels_of(9).unwrap_err(),
            RegistryError::UnknownConnection(9)
        );
    }

    #[test]
    fn removing_a_connection_leaves_its_channels() {
        let mut registry = registry();
        registry.create_channel("lobby");
        drop(registry.join(1, "room").unwrap());
        drop(registry.join(1, "lobby").unwrap());
        drop(registry.join(2, "lobby").unwrap());
        drop(registry.remove_connection(1));
        assert_eq!(
            registry.members(Some("room")).unwrap(),
            Vec::<ConnId>::new()
        );
        assert_eq!(registry.members(Some("lobby")).unwrap(), [2]);
    }

    #[test]
    fn removing_a_channel_keeps_its_members() {
        let mut registry = registry();
        drop(registry.join(1, "room").unwrap());
        assert!(registry.remove_channel("room").is_some());
        assert!(registry.remove_channel("room").is_none());
        assert!(registry.has_connection(1));
        assert_eq!(registry.channels_of(1).unwrap(), Vec::<&str>::new());
        assert!(registry.create_channel("room"));
        assert_eq!(registry.count(Some("room")).unwrap(), 0);
    }

    #[test]
    fn snapshots_are_sorted_and_cached_until_membership_changes() {
        let mut registry = registry();
        let everyone = registry.snapshot(None, Clone::clone).unwrap();
        assert_eq!(ids(&everyone), [(1, "a"), (2, "b"), (3, "c")]);
        assert!(Arc::ptr_eq(
            &everyone,
            &registry.snapshot(None, Clone::clone).unwrap()
        ));
        drop(registry.join(3, "room").unwrap());
        drop(registry.join(1, "room").unwrap());
        let room = registry.snapshot(Some("room"), Clone::clone).unwrap();
        assert_eq!(ids(&room), [(1, "a"), (3, "c")]);
        drop(registry.remove_connection(3));
        assert_eq!(
            ids(&room),
            [(1, "a"), (3, "c")],
            "a taken snapshot never changes"
        );
        assert_eq!(
            ids(&registry.snapshot(Some("room"), Clone::clone).unwrap()),
            [(1, "a")]
        );
        assert_eq!(
            ids(&registry.snapshot(None, Clone::clone).unwrap()),
            [(1, "a"), (2, "b")]
        );
    }

    #[test]
    fn released_values_outlive_the_registry_borrow() {
        let writer = Arc::new(());
        let mut registry = Registry::default();
        drop(registry.add_connection(7, Arc::clone(&writer)).unwrap());
        let snapshot = registry.snapshot(None, Clone::clone).unwrap();
        drop(snapshot);
        assert_eq!(
            registry.writers().count(),
            2,
            "the connection's and the cached copy"
        );
        let released = registry.remove_connection(7).unwrap();
        assert_eq!(
            Arc::strong_count(&writer),
            3,
            "the writer and the cached snapshot"
        );
        drop(released);
        assert_eq!(Arc::strong_count(&writer), 1);
        assert_eq!(registry.writers().count(), 0);
    }
}
