//! The auth-chain index (a chain cover): every state event whose auth events
//! all have a place sits at a position `(chain, seq)`. An event continues a
//! chain only from that chain's tip, citing it as an auth event, so on one
//! chain a higher seq reaches every lower one; an auth event on another
//! chain is a link from the event's position to that auth event's. What an
//! event reaches through its auth events is then, per chain, a highest seq,
//! found by following links whose origin is at or below what is reached on
//! their chain. This makes the auth difference of state resolution a matter
//! of comparing those highest seqs, without reading the auth chains.

use std::collections::{BTreeMap, HashMap};

/// Where an event sits in the chain cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub chain: i64,
    pub seq: i64,
}

/// Reachability between chains: `origin` reaches `target` (and so every
/// lower seq on the target's chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub origin: Position,
    pub target: Position,
}

/// An auth event of an event being placed.
#[derive(Debug, Clone, Copy)]
pub struct AuthPlace {
    pub position: Position,
    /// It has the event's own type and state key (the state it replaces).
    pub same_key: bool,
    /// It is the highest seq of its chain.
    pub is_tip: bool,
}

/// An event's position and the links it adds.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub position: Position,
    pub links: Vec<Link>,
}

/// Place an event given its auth events' places: it continues the chain of
/// the state it replaces when that is the chain's tip (so chains follow one
/// state key's history, as forks of that key start new ones), and starts
/// chain `new_chain` otherwise. It links to the highest auth event on each
/// other chain; lower ones there are reached through it.
pub fn place(auth: &[AuthPlace], new_chain: i64) -> Placement {
    let continued = auth.iter().find(|a| a.same_key && a.is_tip).map(|a| a.position);
    let position = match continued {
        Some(tip) => Position { chain: tip.chain, seq: tip.seq + 1 },
        None => Position { chain: new_chain, seq: 1 },
    };
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for a in auth.iter().filter(|a| a.position.chain != position.chain) {
        let seq = highest.entry(a.position.chain).or_insert(a.position.seq);
        *seq = (*seq).max(a.position.seq);
    }
    let links = highest.into_iter().map(|(chain, seq)| Link { origin: position, target: Position { chain, seq } });
    Placement { position, links: links.collect() }
}

/// Per chain, the highest seq reached.
pub type Reach = HashMap<i64, i64>;

/// A room's links, by origin chain, ordered by origin seq.
pub struct Cover {
    links: HashMap<i64, Vec<(i64, Position)>>,
}

impl Cover {
    pub fn new(links: impl IntoIterator<Item = Link>) -> Self {
        let mut by_chain: HashMap<i64, Vec<(i64, Position)>> = HashMap::new();
        for link in links {
            by_chain.entry(link.origin.chain).or_default().push((link.origin.seq, link.target));
        }
        for links in by_chain.values_mut() {
            links.sort_unstable();
        }
        Self { links: by_chain }
    }

    /// Everything reachable from `roots` through auth events: a root itself
    /// only when `with_roots` or when another root reaches it.
    pub fn reach(&self, roots: impl IntoIterator<Item = Position>, with_roots: bool) -> Reach {
        let mut reach = Reach::new();
        let mut pending: Vec<Position> = Vec::new();
        for root in roots {
            if with_roots {
                pending.push(root);
                continue;
            }
            // A root's own auth events: the previous seq of its chain and its links.
            if root.seq > 1 {
                pending.push(Position { chain: root.chain, seq: root.seq - 1 });
            }
            let links = self.links.get(&root.chain).map_or(&[][..], Vec::as_slice);
            let start = links.partition_point(|(seq, _)| *seq < root.seq);
            pending.extend(links[start..].iter().take_while(|(seq, _)| *seq == root.seq).map(|(_, target)| *target));
        }
        // Links already followed, per chain (a prefix, as they are ordered).
        let mut followed: HashMap<i64, usize> = HashMap::new();
        while let Some(at) = pending.pop() {
            let reached = reach.entry(at.chain).or_insert(0);
            if *reached >= at.seq {
                continue;
            }
            *reached = at.seq;
            let links = self.links.get(&at.chain).map_or(&[][..], Vec::as_slice);
            let done = followed.entry(at.chain).or_insert(0);
            let upto = links.partition_point(|(seq, _)| *seq <= at.seq);
            if upto > *done {
                pending.extend(links[*done..upto].iter().map(|(_, target)| *target));
                *done = upto;
            }
        }
        reach
    }
}

/// The seq ranges `(low, high]` per chain whose events some of `reaches`
/// hold and others lack: the auth difference, when each reach is a state's
/// full auth chain.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v2/#state-resolution>
pub fn difference(reaches: &[Reach]) -> HashMap<i64, (i64, i64)> {
    let mut ranges: HashMap<i64, (i64, i64)> = HashMap::new();
    for chain in reaches.iter().flat_map(HashMap::keys) {
        if ranges.contains_key(chain) {
            continue;
        }
        let seqs = reaches.iter().map(|reach| reach.get(chain).copied().unwrap_or(0));
        let (low, high) = seqs.fold((i64::MAX, 0), |(low, high), seq| (low.min(seq), high.max(seq)));
        if high > low {
            ranges.insert(*chain, (low, high));
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(chain: i64, seq: i64) -> Position {
        Position { chain, seq }
    }

    fn auth(chain: i64, seq: i64, same_key: bool, is_tip: bool) -> AuthPlace {
        AuthPlace { position: at(chain, seq), same_key, is_tip }
    }

    #[test]
    fn an_event_continues_only_the_tip_of_its_own_keys_chain() {
        // The previous state of the key, at the tip: continue its chain.
        let placed = place(&[auth(1, 1, false, true), auth(2, 3, true, true)], 9);
        assert_eq!(placed.position, at(2, 4));
        assert_eq!(placed.links, vec![Link { origin: at(2, 4), target: at(1, 1) }]);
        // Not the tip (that key forked): a new chain, linked to it.
        let placed = place(&[auth(2, 3, true, false)], 9);
        assert_eq!(placed.position, at(9, 1));
        assert_eq!(placed.links, vec![Link { origin: at(9, 1), target: at(2, 3) }]);
        // A tip of another key's chain is not continued.
        assert_eq!(place(&[auth(2, 3, false, true)], 9).position, at(9, 1));
        // Two auth events on one chain: one link, to the higher.
        let placed = place(&[auth(1, 2, false, true), auth(1, 5, false, true)], 9);
        assert_eq!(placed.links, vec![Link { origin: at(9, 1), target: at(1, 5) }]);
    }

    #[test]
    fn reach_follows_links_at_or_below_what_is_reached() {
        // Chain 1: 1..=3; chain 2 at seq 2 links to (1, 2); chain 3 at seq 1 links to (2, 1).
        let cover =
            Cover::new([Link { origin: at(2, 2), target: at(1, 2) }, Link { origin: at(3, 1), target: at(2, 1) }]);
        let reach = cover.reach([at(3, 1)], false);
        assert_eq!(reach, Reach::from([(2, 1)]), "(2, 1) is below the link at (2, 2)");
        let reach = cover.reach([at(2, 2)], false);
        assert_eq!(reach, Reach::from([(2, 1), (1, 2)]), "a root's own links, not the root");
        let reach = cover.reach([at(2, 2)], true);
        assert_eq!(reach, Reach::from([(2, 2), (1, 2)]));
        // A root reached from another root is in.
        let reach = cover.reach([at(3, 1), at(2, 1)], false);
        assert_eq!(reach, Reach::from([(2, 1)]));
    }

    #[test]
    fn the_difference_is_what_some_reach_and_others_do_not() {
        let a = Reach::from([(1, 3), (2, 1)]);
        let b = Reach::from([(1, 5), (3, 2)]);
        let ranges = difference(&[a.clone(), b]);
        assert_eq!(ranges, HashMap::from([(1, (3, 5)), (2, (0, 1)), (3, (0, 2))]));
        assert!(difference(&[a.clone(), a]).is_empty());
    }
}
