//! A SKU's stock: on-hand per location, order lines and their reservations, and the recent
//! placements the trailing windows read (CONTRACT.md section 4).
//!
//! Order lines accumulate with history, so they are [`Records`] under their own keys: the
//! fold sees the lines the runner provided (see [`crate::keyed`]).

use serde::{Deserialize, Serialize};
use smallvec::{SmallVec, smallvec};

use crate::contract::Rules;
use crate::demand::Demand;
use crate::fact::{LineKey, Placed, Rejection, Returned, Shipped};
use crate::keyed::Records;
use crate::ledger::Terms;
use crate::small_map::SmallMap;

pub use crate::demand::{DAY_MS, HOUR_MS, KEEP_MS, WINDOW_MS};

/// Where a line reserves its units.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pool {
    Shared,
    Dedicated(String),
}

impl Pool {
    /// The pool a location belongs to.
    pub fn of_location(rules: &Rules, location: &str) -> Pool {
        match rules.location(location).and_then(|l| l.dedicated_to.clone()) {
            Some(channel) => Pool::Dedicated(channel),
            None => Pool::Shared,
        }
    }

    /// Whether `location` belongs to this pool.
    pub fn holds(&self, rules: &Rules, location: &str) -> bool {
        let dedicated_to = rules.location(location).and_then(|l| l.dedicated_to.as_deref());
        match self {
            Pool::Shared => dedicated_to.is_none(),
            Pool::Dedicated(channel) => dedicated_to == Some(channel.as_str()),
        }
    }

    /// The contract's name of the pool: `shared` or `dedicated:<channel>`.
    pub fn name(&self) -> String {
        match self {
            Pool::Shared => "shared".to_string(),
            Pool::Dedicated(channel) => format!("dedicated:{channel}"),
        }
    }
}

/// What is known of one order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub pool: Pool,
    pub placed: i64,
    pub shipped: i64,
    pub cancelled: i64,
    pub returned: i64,
    /// What its shipments are worth (the contribution ledger).
    #[serde(default)]
    pub terms: Terms,
    /// Where its open units are counted for routing: the placed location, or the one
    /// advised (CONTRACT.md section 10); only when the contract routes.
    #[serde(default)]
    pub location: Option<String>,
    /// Whether `location` was advised by routing rather than given by the channel.
    #[serde(default)]
    pub advised: bool,
    /// Whether the advice was a split.
    #[serde(default)]
    pub split: bool,
}

impl Line {
    /// Placed minus shipped minus cancelled.
    pub fn open(&self) -> i64 {
        self.placed - self.shipped - self.cancelled
    }
}

/// The stock side of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub on_hand: SmallMap<String, i64>,
    /// Open reservations per pool, kept in step with the lines.
    pub reserved: SmallMap<Pool, i64>,
    /// Trailing placements per channel (and per pool, when the contract asks for velocities).
    pub demand: Demand,
    /// Open reservations counted per location, for routing: lines placed at or advised to
    /// it. Empty unless the contract routes (section 10).
    #[serde(default)]
    pub reserved_at: SmallMap<String, i64>,
    /// The working set of order lines; stored under their own keys.
    #[serde(skip)]
    pub lines: Records<LineKey, Line>,
}

impl Stock {
    pub fn place(
        &mut self,
        rules: &Rules,
        placed: &Placed,
        terms: Terms,
        at_ms: i64,
    ) -> Result<(), Rejection> {
        if self.lines.contains(&placed.line) {
            return Err(Rejection::DuplicateLine(placed.line.clone()));
        }
        let pool = match &placed.location {
            Some(location) => {
                let own = Pool::Dedicated(placed.line.channel.to_string());
                if own.holds(rules, location) { own } else { Pool::Shared }
            }
            None => Pool::Shared,
        };
        *self.reserved.get_or_default_mut(&pool) += placed.quantity;
        if rules.tracks_pool_demand() {
            self.demand.place_in_pool(&rules.pool_series(&pool), at_ms, placed.quantity);
        }
        let location = placed.location.clone().filter(|_| rules.tracks_locations());
        if let Some(location) = &location {
            *self.reserved_at.get_or_default_mut(location.as_str()) += placed.quantity;
        }
        let line = Line {
            pool,
            placed: placed.quantity,
            shipped: 0,
            cancelled: 0,
            returned: 0,
            terms,
            location,
            advised: false,
            split: false,
        };
        self.lines.insert(placed.line.clone(), line);
        self.demand.place(&placed.line.channel, at_ms, placed.quantity);
        Ok(())
    }

    /// Counts a line placed without a location at the location routing advised.
    pub fn advise(&mut self, line: &LineKey, location: &str, split: bool) {
        let Some(known) = self.lines.get_mut(line) else { return };
        known.location = Some(location.to_string());
        known.advised = true;
        known.split = split;
        let open = known.open();
        *self.reserved_at.get_or_default_mut(location) += open;
    }

    /// Open reservations counted at a location (routing).
    pub fn reserved_at(&self, location: &str) -> i64 {
        self.reserved_at.get(location).copied().unwrap_or(0)
    }

    pub fn on_hand_at(&self, location: &str) -> i64 {
        self.on_hand.get(location).copied().unwrap_or(0)
    }

    /// Releases the line's open quantity; a line with nothing open is left as it is.
    pub fn cancel(&mut self, line: &LineKey, sku: &str) -> Result<(), Rejection> {
        let known = self.line_mut(line, sku)?;
        let open = known.open();
        known.cancelled += open;
        let (pool, location) = (known.pool.clone(), known.location.clone());
        self.release(&pool, open);
        self.release_at(location.as_deref(), open);
        Ok(())
    }

    /// Ships from the line; returns the line as shipped.
    pub fn ship(&mut self, shipped: &Shipped) -> Result<Line, Rejection> {
        let known = self.line_mut(&shipped.line, &shipped.sku)?;
        let open = known.open();
        if shipped.quantity > open {
            return Err(Rejection::ShipBeyondOpen {
                line: shipped.line.clone(),
                quantity: shipped.quantity,
                open,
            });
        }
        known.shipped += shipped.quantity;
        let line = known.clone();
        self.release(&line.pool, shipped.quantity);
        self.release_at(line.location.as_deref(), shipped.quantity);
        *self.on_hand.get_or_default_mut(shipped.location.as_str()) -= shipped.quantity;
        Ok(line)
    }

    pub fn take_return(&mut self, returned: &Returned) -> Result<(), Rejection> {
        let known = self.line_mut(&returned.line, &returned.sku)?;
        let returnable = known.shipped - known.returned;
        if returned.quantity > returnable {
            let line = returned.line.clone();
            return Err(Rejection::ReturnBeyondShipped { line, quantity: returned.quantity, returnable });
        }
        known.returned += returned.quantity;
        if let Some(location) = &returned.restock_at {
            *self.on_hand.get_or_default_mut(location.as_str()) += returned.quantity;
        }
        Ok(())
    }

    /// Moves on-hand; returns the prior on-hand.
    pub fn adjust(&mut self, location: &str, delta: i64) -> i64 {
        let on_hand = self.on_hand.get_or_default_mut(location);
        let prior = *on_hand;
        *on_hand += delta;
        prior
    }

    /// Replaces on-hand; returns the prior on-hand.
    pub fn count(&mut self, location: &str, counted: i64) -> i64 {
        self.on_hand.insert(location.to_string(), counted).unwrap_or(0)
    }

    fn line_mut(&mut self, line: &LineKey, sku: &str) -> Result<&mut Line, Rejection> {
        self.lines
            .get_mut(line)
            .ok_or_else(|| Rejection::UnknownLine { line: line.clone(), sku: sku.to_string() })
    }

    fn release(&mut self, pool: &Pool, units: i64) {
        if units != 0 {
            *self.reserved.get_or_default_mut(pool) -= units;
        }
    }

    fn release_at(&mut self, location: Option<&str>, units: i64) {
        if let Some(location) = location
            && units != 0
            && let Some(reserved) = self.reserved_at.get_mut(location)
        {
            *reserved -= units;
            if *reserved == 0 {
                self.reserved_at.remove(location);
            }
        }
    }

    /// Every pool's ATP, from one pass over the locations.
    pub fn atps(&self, rules: &Rules) -> Atps {
        let mut atps =
            Atps { shared: 0, dedicated: smallvec![0; rules.contract.channels.len()], foreign: Vec::new() };
        for (location, units) in &self.on_hand {
            match rules.location_owner(location) {
                Some(channel) => atps.dedicated[channel] += units,
                None => atps.shared += units,
            }
        }
        for (pool, units) in &self.reserved {
            match pool {
                Pool::Shared => atps.shared -= units,
                Pool::Dedicated(channel) => match rules.channel_index(channel) {
                    Some(index) => atps.dedicated[index] -= units,
                    None => atps.foreign.push((channel.clone(), -units)),
                },
            }
        }
        atps
    }

    /// ATP(pool): on-hand over the pool's locations minus its open reservations, as the
    /// contract defines it, one pool at a time. The fold reads [`Stock::atps`]; this is the
    /// definition the property tests hold that against.
    pub fn atp(&self, rules: &Rules, pool: &Pool) -> i64 {
        let on_hand: i64 = self
            .on_hand
            .iter()
            .filter(|(location, _)| pool.holds(rules, location))
            .map(|(_, units)| units)
            .sum();
        on_hand - self.reserved.get(pool).copied().unwrap_or(0)
    }
}

/// Every pool's ATP at one moment ([`Stock::atps`]). An event's evaluation asks for pools'
/// ATP a dozen times (allocation, stock conditions, replenishment), and [`Stock::atp`] looks
/// every location up in the contract each time: about a tenth of the fold's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atps {
    shared: i64,
    /// Each channel's dedicated pool, by index into the contract's channels: inline for up
    /// to eight channels, since every event that moves stock reads them.
    dedicated: SmallVec<[i64; 8]>,
    /// Reservations in the dedicated pool of a channel the contract no longer names (a line
    /// placed under an earlier contract): no location is dedicated to it.
    foreign: Vec<(String, i64)>,
}

impl Atps {
    pub fn shared(&self) -> i64 {
        self.shared
    }

    /// The ATP of the dedicated pool of the channel at this index of the contract's channels.
    pub fn dedicated(&self, channel: usize) -> i64 {
        self.dedicated[channel]
    }

    /// [`Stock::atp`], as of when these were computed.
    pub fn of(&self, rules: &Rules, pool: &Pool) -> i64 {
        match pool {
            Pool::Shared => self.shared,
            Pool::Dedicated(channel) => match rules.channel_index(channel) {
                Some(index) => self.dedicated[index],
                None => self.foreign.iter().find(|(c, _)| c == channel).map_or(0, |(_, atp)| *atp),
            },
        }
    }
}
