//! The coordination contract (CONTRACT.md section 3): the one configuration every service
//! shares. Shape is checked by `schemas/coordination-contract.schema.json` before this type
//! is built; [`Contract::problems`] then checks the rules a schema cannot express.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::money::{Amount, MoneyError};
use crate::stock::Pool;

/// The whole coordination contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub reporting_currency: String,
    /// Units of reporting currency per unit of the keyed currency.
    #[serde(default)]
    pub fx: BTreeMap<String, Decimal>,
    /// Who answers for shared stock and for every conflict no channel is accountable for.
    pub operations: Operations,
    pub channels: Vec<Channel>,
    pub locations: Vec<Location>,
    pub allocation: Allocation,
    pub pricing: Pricing,
    pub escalation: EscalationRules,
    pub reporting: Reporting,
    /// Reorder suggestions for the shared pool (CONTRACT.md section 10); absent: none.
    #[serde(default)]
    pub replenishment: Option<Replenishment>,
    /// Transfer suggestions into dedicated FBA pools (CONTRACT.md section 10); absent: none.
    #[serde(default)]
    pub transfers: Option<Transfers>,
}

/// `[replenishment]`: when and how much to order into the shared pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replenishment {
    /// Days from ordering to the units landing, unless the receiving location overrides it.
    pub lead_time_days: Decimal,
    /// Per-location lead time overrides.
    #[serde(default)]
    pub location_lead_time_days: BTreeMap<String, Decimal>,
    pub review_period_days: Decimal,
    pub target_cover_days: Decimal,
    /// Units per case, per SKU; an order is rounded up to a whole number of cases.
    #[serde(default)]
    pub case_pack: BTreeMap<String, i64>,
}

/// `[transfers]`: when and how much to move from the shared pool into FBA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfers {
    pub fba_target_cover_days: Decimal,
    #[serde(default)]
    pub min_transfer_units: i64,
}

/// The operations owner and on-call target (CONTRACT.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operations {
    pub owner: String,
    pub on_call: String,
}

/// A sales channel and the people behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub on_call: String,
    pub currency: String,
    /// Lower is served first under scarcity.
    pub priority: u32,
    #[serde(default = "one")]
    pub max_share: Decimal,
    pub fee_rate: Decimal,
    pub margin_floor: Decimal,
    #[serde(default)]
    pub map_applies: bool,
    pub weekly_operating_cost: MoneyConfig,
    #[serde(default = "yes")]
    pub sells_from_shared_pool: bool,
    /// The channel's own ORDER_SPIKE floor, in place of the global one.
    #[serde(default)]
    pub spike_min_units: Option<i64>,
    /// The locations the channel may ship from, in order of preference (routing).
    #[serde(default)]
    pub ship_from: Vec<String>,
}

/// A stock location; dedicated to one channel or shared by all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub id: String,
    pub kind: LocationKind,
    #[serde(default)]
    pub dedicated_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Warehouse,
    Fba,
    #[serde(rename = "3pl")]
    ThirdParty,
}

/// Stock allocation settings (CONTRACT.md section 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub safety_stock: i64,
    pub scarcity_threshold: i64,
    pub scarcity_mode: ScarcityMode,
    pub reorder_cover_days: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScarcityMode {
    Priority,
    Proportional,
}

/// Price and promotion governance settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default)]
    pub map: BTreeMap<String, MoneyConfig>,
    pub max_channel_spread: Decimal,
    pub max_concurrent_promotions: u32,
    pub max_combined_discount: Decimal,
    pub competitor_undercut_threshold: Decimal,
    pub competitor_step: MoneyConfig,
}

/// Thresholds of the unusual-event rules (CONTRACT.md section 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRules {
    pub spike_factor: Decimal,
    pub spike_min_units: i64,
    /// How long a channel must have been selling a SKU before its placements can spike.
    #[serde(default = "one")]
    pub spike_min_history_days: Decimal,
    pub stock_drop_fraction: Decimal,
    pub price_jump_fraction: Decimal,
}

/// Weekly contribution settings (CONTRACT.md section 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporting {
    pub week_offset_minutes: i64,
    pub allowed_lateness_ms: i64,
    pub retire_revenue_share: Decimal,
    pub retire_cost_share: Decimal,
    pub retire_negative_weeks: u32,
}

/// Money as written in the contract file: a decimal string and a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyConfig {
    pub amount: Decimal,
    pub currency: String,
}

fn one() -> Decimal {
    Decimal::ONE
}

fn yes() -> bool {
    true
}

/// One rule of the contract broken by the file, with the path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractProblem {
    /// A JSON pointer into the file, e.g. `/channels/2/max_share`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ContractProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

impl Contract {
    /// The rules of CONTRACT.md section 3 that a JSON schema cannot express. Empty when the
    /// contract is sound.
    pub fn problems(&self) -> Vec<ContractProblem> {
        let mut problems = Vec::new();
        let mut push = |path: String, message: String| problems.push(ContractProblem { path, message });
        for (currency, rate) in &self.fx {
            if *rate <= Decimal::ZERO {
                push(format!("/fx/{currency}"), format!("rate {rate} is not greater than 0"));
            }
        }
        for id in duplicates(self.channels.iter().map(|c| c.id.as_str())) {
            push("/channels".into(), format!("duplicate channel id {id}"));
        }
        for id in duplicates(self.locations.iter().map(|l| l.id.as_str())) {
            push("/locations".into(), format!("duplicate location id {id}"));
        }
        for (i, channel) in self.channels.iter().enumerate() {
            if channel.max_share < Decimal::ZERO || channel.max_share > Decimal::ONE {
                push(format!("/channels/{i}/max_share"), format!("{} is outside [0, 1]", channel.max_share));
            }
            if channel.fee_rate + channel.margin_floor >= Decimal::ONE {
                push(
                    format!("/channels/{i}/fee_rate"),
                    format!(
                        "fee_rate {} + margin_floor {} of channel {} is not below 1",
                        channel.fee_rate, channel.margin_floor, channel.id
                    ),
                );
            }
            for (field, currency) in [
                ("currency", &channel.currency),
                ("weekly_operating_cost", &channel.weekly_operating_cost.currency),
            ] {
                if !self.has_rate(currency) {
                    push(format!("/channels/{i}/{field}"), format!("currency {currency} has no fx rate"));
                }
            }
        }
        for (i, location) in self.locations.iter().enumerate() {
            if let Some(owner) = &location.dedicated_to
                && self.channel(owner).is_none()
            {
                push(format!("/locations/{i}/dedicated_to"), format!("unknown channel {owner}"));
            }
        }
        for (i, channel) in self.channels.iter().enumerate() {
            for (j, location) in channel.ship_from.iter().enumerate() {
                if self.location(location).is_none() {
                    push(format!("/channels/{i}/ship_from/{j}"), format!("unknown location {location}"));
                }
            }
            for id in duplicates(channel.ship_from.iter().map(String::as_str)) {
                push(format!("/channels/{i}/ship_from"), format!("location {id} listed twice"));
            }
        }
        if let Some(replenishment) = &self.replenishment {
            let days = [
                ("lead_time_days", replenishment.lead_time_days),
                ("review_period_days", replenishment.review_period_days),
                ("target_cover_days", replenishment.target_cover_days),
            ];
            for (field, value) in days {
                if value < Decimal::ZERO {
                    push(format!("/replenishment/{field}"), format!("{value} is negative"));
                }
            }
            for (location, value) in &replenishment.location_lead_time_days {
                let path = format!("/replenishment/location_lead_time_days/{location}");
                if self.location(location).is_none() {
                    push(path, format!("unknown location {location}"));
                } else if *value < Decimal::ZERO {
                    push(path, format!("{value} is negative"));
                }
            }
            for (sku, pack) in &replenishment.case_pack {
                if *pack < 1 {
                    push(format!("/replenishment/case_pack/{sku}"), format!("case pack {pack} is below 1"));
                }
            }
        }
        if let Some(transfers) = &self.transfers {
            if transfers.fba_target_cover_days < Decimal::ZERO {
                let value = transfers.fba_target_cover_days;
                push("/transfers/fba_target_cover_days".into(), format!("{value} is negative"));
            }
            if transfers.min_transfer_units < 0 {
                let value = transfers.min_transfer_units;
                push("/transfers/min_transfer_units".into(), format!("{value} is negative"));
            }
        }
        for (sku, map) in &self.pricing.map {
            if !self.has_rate(&map.currency) {
                push(format!("/pricing/map/{sku}"), format!("currency {} has no fx rate", map.currency));
            }
        }
        if !self.has_rate(&self.pricing.competitor_step.currency) {
            push("/pricing/competitor_step".into(), "currency has no fx rate".into());
        }
        problems
    }

    /// The channel with this id.
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// The location with this id.
    pub fn location(&self, id: &str) -> Option<&Location> {
        self.locations.iter().find(|l| l.id == id)
    }

    /// Whether amounts in `currency` can be converted to the reporting currency.
    pub fn has_rate(&self, currency: &str) -> bool {
        currency == self.reporting_currency || self.fx.contains_key(currency)
    }

    /// Converts an amount to the reporting currency.
    pub fn to_reporting(&self, amount: &Amount) -> Result<Decimal, MoneyError> {
        if amount.currency == self.reporting_currency {
            return Ok(amount.value);
        }
        let rate = self
            .fx
            .get(amount.currency.as_str())
            .ok_or_else(|| MoneyError::NoRate(amount.currency.to_string()))?;
        Ok(amount.value * rate)
    }
}

fn duplicates<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    let mut dups: Vec<&str> = ids.filter(|id| !seen.insert(*id)).collect();
    dups.dedup();
    dups
}

/// The contract prepared for the fold: lookups by id and channels in (priority, id) order.
#[derive(Debug, Clone)]
pub struct Rules {
    pub contract: Contract,
    /// Channel indexes into `contract.channels`, in (priority, id) order.
    order: Vec<usize>,
    channel_index: FxHashMap<String, usize>,
    location_index: FxHashMap<String, usize>,
    /// Each location's dedicated channel, as an index into `contract.channels`, in location
    /// order.
    location_owner: Vec<Option<usize>>,
    /// Each pool's name and demand series, made once: the fold reads them on every event.
    shared_pool: PoolNames,
    dedicated_pools: FxHashMap<String, PoolNames>,
    /// The shared pool, then each channel's dedicated pool that has a location, in channel
    /// order.
    stocked_pools: Vec<Pool>,
    /// The dedicated pools a transfer can fill, in channel order (see [`TransferPool`]).
    transfer_pools: Vec<TransferPool>,
}

/// A channel's dedicated pool with an FBA location: what its transfer suggestion (CONTRACT.md
/// section 10) names and reads, made once since every event of a SKU asks.
#[derive(Debug, Clone)]
pub struct TransferPool {
    pub pool: Pool,
    /// The channel's first `fba` location in contract order, where transfers land.
    pub fba_location: String,
    /// The pool's contract name and demand series.
    pub name: String,
    pub series: String,
}

fn transfer_pools(contract: &Contract, order: &[usize]) -> Vec<TransferPool> {
    order
        .iter()
        .map(|&i| &contract.channels[i].id)
        .filter_map(|channel| {
            let fba = contract.locations.iter().find(|l| {
                l.kind == LocationKind::Fba && l.dedicated_to.as_deref() == Some(channel.as_str())
            })?;
            let pool = Pool::Dedicated(channel.clone());
            let names = PoolNames::of(&pool);
            Some(TransferPool { pool, fba_location: fba.id.clone(), name: names.name, series: names.series })
        })
        .collect()
}

/// A pool's contract name (`shared`, `dedicated:<channel>`) and the key of its placements
/// among a SKU's demand series.
#[derive(Debug, Clone)]
struct PoolNames {
    name: String,
    series: String,
    /// The key of the pool's OVERSELL condition, looked up at every event that leaves the
    /// pool oversold.
    oversell_key: String,
}

impl PoolNames {
    fn of(pool: &Pool) -> Self {
        let name = pool.name();
        PoolNames {
            series: crate::demand::pool_series(&name),
            oversell_key: crate::stock_alerts::oversell_key(pool),
            name,
        }
    }
}

fn stocked_pools(contract: &Contract, order: &[usize]) -> Vec<Pool> {
    let dedicated = order.iter().map(|&i| &contract.channels[i].id).filter(|channel| {
        contract.locations.iter().any(|l| l.dedicated_to.as_deref() == Some(channel.as_str()))
    });
    std::iter::once(Pool::Shared).chain(dedicated.map(|channel| Pool::Dedicated(channel.clone()))).collect()
}

impl Rules {
    /// Prepares a contract that has no [`Contract::problems`].
    pub fn new(contract: Contract) -> Self {
        let mut order: Vec<usize> = (0..contract.channels.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&contract.channels[a], &contract.channels[b]);
            (a.priority, &a.id).cmp(&(b.priority, &b.id))
        });
        let channel_index = contract.channels.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        let location_index = contract.locations.iter().enumerate().map(|(i, l)| (l.id.clone(), i)).collect();
        let location_owner = contract
            .locations
            .iter()
            .map(|l| {
                l.dedicated_to.as_ref().and_then(|c| contract.channels.iter().position(|ch| ch.id == *c))
            })
            .collect();
        let shared_pool = PoolNames::of(&Pool::Shared);
        let dedicated_pools = contract
            .channels
            .iter()
            .map(|c| (c.id.clone(), PoolNames::of(&Pool::Dedicated(c.id.clone()))))
            .collect();
        let stocked_pools = stocked_pools(&contract, &order);
        let transfer_pools = transfer_pools(&contract, &order);
        Rules {
            contract,
            order,
            channel_index,
            location_index,
            location_owner,
            shared_pool,
            dedicated_pools,
            stocked_pools,
            transfer_pools,
        }
    }

    /// The dedicated pools with an FBA location, channels in (priority, id) order.
    pub fn transfer_pools(&self) -> &[TransferPool] {
        &self.transfer_pools
    }

    /// The pools that can hold stock: the shared pool and every channel's dedicated pool that
    /// has a location, channels in (priority, id) order.
    pub fn stocked_pools(&self) -> &[Pool] {
        &self.stocked_pools
    }

    fn pool_names(&self, pool: &Pool) -> Option<&PoolNames> {
        match pool {
            Pool::Shared => Some(&self.shared_pool),
            Pool::Dedicated(channel) => self.dedicated_pools.get(channel),
        }
    }

    /// The pool's contract name, without formatting it for a pool of the contract.
    pub fn pool_name(&self, pool: &Pool) -> Cow<'_, str> {
        match self.pool_names(pool) {
            Some(names) => Cow::Borrowed(&names.name),
            None => Cow::Owned(pool.name()),
        }
    }

    /// The key of the pool's OVERSELL condition ([`crate::alerts::key`]).
    pub fn oversell_key(&self, pool: &Pool) -> Cow<'_, str> {
        match self.pool_names(pool) {
            Some(names) => Cow::Borrowed(&names.oversell_key),
            None => Cow::Owned(crate::stock_alerts::oversell_key(pool)),
        }
    }

    /// The key of the pool's placements among a SKU's demand series.
    pub fn pool_series(&self, pool: &Pool) -> Cow<'_, str> {
        match self.pool_names(pool) {
            Some(names) => Cow::Borrowed(&names.series),
            None => Cow::Owned(crate::demand::pool_series(&pool.name())),
        }
    }

    /// The ORDER_SPIKE floor of a channel: its own, else the global one.
    pub fn spike_min_units(&self, channel: &str) -> i64 {
        self.channel(channel)
            .and_then(|c| c.spike_min_units)
            .unwrap_or(self.contract.escalation.spike_min_units)
    }

    /// The owner and on-call target of an accountable party: a channel id or `operations`.
    pub fn people_of(&self, accountable: &str) -> (&str, &str) {
        match self.channel(accountable) {
            Some(channel) => (&channel.owner, &channel.on_call),
            None => (&self.contract.operations.owner, &self.contract.operations.on_call),
        }
    }

    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channel_index.get(id).map(|&i| &self.contract.channels[i])
    }

    pub fn location(&self, id: &str) -> Option<&Location> {
        self.location_index.get(id).map(|&i| &self.contract.locations[i])
    }

    /// The channel a location is dedicated to, as an index into `contract.channels`; `None`
    /// for a shared location and for one the contract does not name.
    pub fn location_owner(&self, location: &str) -> Option<usize> {
        self.location_index.get(location).and_then(|&i| self.location_owner[i])
    }

    /// The index into `contract.channels` of the channel with this id.
    pub fn channel_index(&self, id: &str) -> Option<usize> {
        self.channel_index.get(id).copied()
    }

    /// Every channel in (priority, id) order, with its index into `contract.channels`.
    pub fn indexed_channels_in_order(&self) -> impl Iterator<Item = (usize, &Channel)> + '_ {
        self.order.iter().map(|&i| (i, &self.contract.channels[i]))
    }

    /// Every channel in (priority, id) order.
    pub fn channels_in_order(&self) -> impl Iterator<Item = &Channel> + '_ {
        self.indexed_channels_in_order().map(|(_, channel)| channel)
    }

    /// The channels that sell from the shared pool, in (priority, id) order.
    pub fn shared_sellers(&self) -> impl Iterator<Item = &Channel> + '_ {
        self.channels_in_order().filter(|c| c.sells_from_shared_pool)
    }

    /// Whether placements are also kept per pool, for the velocities of section 10: only
    /// when the contract asks for reorder or transfer suggestions.
    pub fn tracks_pool_demand(&self) -> bool {
        self.contract.replenishment.is_some() || self.contract.transfers.is_some()
    }

    /// Whether open reservations are also counted per location, for routing: only when
    /// some channel has a `ship_from` list.
    pub fn tracks_locations(&self) -> bool {
        self.contract.channels.iter().any(|c| !c.ship_from.is_empty())
    }

    /// Sorts channel ids into (priority, id) order; unknown ids go last.
    pub fn sort_channels(&self, ids: &mut [String]) {
        ids.sort_by_key(|id| {
            let priority = self.channel(id).map_or(u32::MAX, |c| c.priority);
            (priority, id.clone())
        });
    }
}
