//! Where a token trades: the network whose DEX data callwatch asks for its
//! value. The engine's `Token` knows only the address family (Solana or
//! EVM); an EVM address lives on one of several networks, named by the
//! link it came with or a configured default.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A network callwatch can price tokens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Solana,
    Ethereum,
    Base,
    Bsc,
    Arbitrum,
    Polygon,
    Avalanche,
    Optimism,
}

impl Network {
    /// Every network, in a fixed order.
    pub const ALL: [Network; 8] = [
        Network::Solana,
        Network::Ethereum,
        Network::Base,
        Network::Bsc,
        Network::Arbitrum,
        Network::Polygon,
        Network::Avalanche,
        Network::Optimism,
    ];

    /// Whether its addresses are EVM addresses.
    pub fn is_evm(self) -> bool {
        self != Network::Solana
    }

    /// DexScreener's `chainId`.
    pub fn dexscreener_id(self) -> &'static str {
        match self {
            Network::Solana => "solana",
            Network::Ethereum => "ethereum",
            Network::Base => "base",
            Network::Bsc => "bsc",
            Network::Arbitrum => "arbitrum",
            Network::Polygon => "polygon",
            Network::Avalanche => "avalanche",
            Network::Optimism => "optimism",
        }
    }

    /// GeckoTerminal's network id.
    pub fn geckoterminal_id(self) -> &'static str {
        match self {
            Network::Solana => "solana",
            Network::Ethereum => "eth",
            Network::Base => "base",
            Network::Bsc => "bsc",
            Network::Arbitrum => "arbitrum",
            Network::Polygon => "polygon_pos",
            Network::Avalanche => "avax",
            Network::Optimism => "optimism",
        }
    }

    /// The network a link or a data source names: DexScreener's and
    /// GeckoTerminal's ids, and the short names explorers and trading
    /// sites use (`eth`, `sol`, `avax`, …), in any letter case.
    pub fn from_name(name: &str) -> Option<Network> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "solana" | "sol" => Network::Solana,
            "ethereum" | "eth" | "mainnet" => Network::Ethereum,
            "base" => Network::Base,
            "bsc" | "bnb" | "binance" => Network::Bsc,
            "arbitrum" | "arb" => Network::Arbitrum,
            "polygon" | "polygon_pos" | "matic" => Network::Polygon,
            "avalanche" | "avax" => Network::Avalanche,
            "optimism" | "op" => Network::Optimism,
            _ => return None,
        })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dexscreener_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_is_found_by_each_of_its_names() {
        for n in Network::ALL {
            assert_eq!(Network::from_name(n.dexscreener_id()), Some(n));
            assert_eq!(Network::from_name(n.geckoterminal_id()), Some(n));
            assert_eq!(Network::from_name(&n.to_string().to_uppercase()), Some(n));
        }
        assert_eq!(Network::from_name("tron"), None);
        assert!(!Network::Solana.is_evm() && Network::Base.is_evm());
    }
}
