rule crypto_miner
{
    meta:
        why = "Cryptocurrency miner configuration (pool URL or miner binary name)."
        severity = "8.0"
        category = "payload"
    strings:
        $pool = /stratum\+(tcp|ssl|tls):\/\// nocase
        $xmrig = /\bxmrig(\.exe)?\b/ nocase
        $donate = "--donate-level" nocase
        $algo = /\b(cryptonight|randomx|rx\/0)\b/ nocase
        $pools = /\b(minexmr|supportxmr|moneroocean|nanopool|nicehash|2miners|f2pool|hashvault)\.(com|org|net|stream|pro)/ nocase
    condition:
        $pool or ($xmrig and ($donate or $algo or $pools)) or ($pools and ($donate or $algo))
}
