rule discord_webhook_token
{
    meta:
        why = "A Discord webhook URL with its token: a write-only drop box often used to exfiltrate data."
        severity = "5.0"
        category = "exfiltration"
    strings:
        $hook = /discord(app)?\.com\/api\/webhooks\/[0-9]{17,20}\/[A-Za-z0-9_\-]{30,}/
    condition:
        $hook
}

rule telegram_bot_exfil
{
    meta:
        why = "A Telegram bot token with the send API: a drop box often used to exfiltrate data."
        severity = "5.0"
        category = "exfiltration"
    strings:
        $api = /api\.telegram\.org\/bot[0-9]{6,12}:[A-Za-z0-9_\-]{30,}/
        $api2 = "api.telegram.org/bot"
        $token = /['"][0-9]{8,12}:AA[A-Za-z0-9_\-]{33}['"]/
        $send = /send(Message|Document|Photo)/
    condition:
        $api or ($api2 and $token) or ($token and $send)
}

rule discord_token_grabber
{
    meta:
        why = "Discord token grabber markers: reads Discord's local storage and matches account tokens."
        severity = "8.0"
        category = "exfiltration"
    strings:
        $ls = /discord(canary|ptb)?[\\\/]{1,2}Local Storage[\\\/]{1,2}leveldb/ nocase
        $ls2 = /Local Storage[\\\/]{1,2}leveldb/ nocase
        $re1 = "[\\w-]{24}\\.[\\w-]{6}\\.[\\w-]{27}"
        $re2 = "mfa\\.[\\w-]{84}"
        $re3 = "dQw4w9WgXcQ:"
        $me = /discord(app)?\.com\/api\/v[0-9]+\/users\/@me/
    condition:
        ($ls or $ls2) and (any of ($re*) or $me)
}

rule browser_credential_stealer
{
    meta:
        why = "Decrypts browser-saved passwords or cookies (Login Data / Local State with DPAPI or encrypted_key)."
        severity = "8.0"
        category = "exfiltration"
    strings:
        $login = "Login Data"
        $cookies = /Network[\\\/]{1,2}Cookies/
        $state = "Local State"
        $key = "encrypted_key"
        $dpapi = "CryptUnprotectData"
        $sql = /SELECT\s+(origin_url|action_url|host_key)/ nocase
    condition:
        ($login or $cookies or $sql) and ($state or $key) and ($dpapi or $key)
}

rule crypto_wallet_stealer
{
    meta:
        why = "Collects several cryptocurrency wallet stores."
        severity = "7.0"
        category = "exfiltration"
    strings:
        $w1 = "Exodus" nocase
        $w2 = "Electrum" nocase
        $w3 = "Atomic" nocase
        $w4 = "nkbihfbeogaeaoehlefnkodbefgpgknn"
        $w5 = "wallet.dat"
        $w6 = "Coinomi" nocase
        $w7 = "Ethereum\\keystore" nocase
        $w8 = "Ethereum/keystore" nocase
        $w9 = "Zcash" nocase
        $w10 = "Armory" nocase
        $w11 = "Jaxx" nocase
        $w12 = "Guarda" nocase
    condition:
        4 of them
}
