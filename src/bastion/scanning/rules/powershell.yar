rule powershell_encoded
{
    meta:
        why = "Starts PowerShell with an encoded (base64) command: the script it runs is hidden."
        severity = "8.5"
        category = "execution"
    strings:
        $enc = /powershell(\.exe)?['"]?[^\n]{0,200}[\s'",][-\/](e|ec|en|enc|enco|encod|encodedcommand)['"]?[\s,]+['"]?[A-Za-z0-9+\/]{20,}={0,2}/ nocase
    condition:
        $enc
}

rule powershell_download_cradle
{
    meta:
        why = "A PowerShell download cradle: fetches a script from a URL and runs it (Invoke-Expression)."
        severity = "8.0"
        category = "payload"
    strings:
        $ps = "powershell" nocase
        $d1 = /(DownloadString|DownloadFile|DownloadData)\(\s*['"]?https?:\/\// nocase
        $d2 = /(Invoke-WebRequest|Invoke-RestMethod|iwr|irm)\s+(-Uri\s+)?['"]?https?:\/\/[^\s'"|]+['"]?[^|\n]{0,40}\|\s*(iex|Invoke-Expression)/ nocase
        $d3 = /(iex|Invoke-Expression)\s*\(?\s*\(?\s*New-Object\s+(System\.)?Net\.WebClient\)?\.Download/ nocase
    condition:
        $ps and any of ($d*)
}

rule defender_exclusion
{
    meta:
        why = "Adds a Microsoft Defender exclusion: malware hiding its files from antivirus."
        severity = "8.0"
        category = "persistence"
    strings:
        $a = "Add-MpPreference" nocase
        $b = "ExclusionPath" nocase
        $c = "DisableRealtimeMonitoring" nocase
    condition:
        $a and ($b or $c)
}
