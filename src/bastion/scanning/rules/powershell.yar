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
        $x = /\b(iex|Invoke-Expression|Start-Process)\b/ nocase
        $d3 = /(iex|Invoke-Expression)\s*\(?\s*\(?\s*New-Object\s+(System\.)?Net\.WebClient\)?\.Download/ nocase
    condition:
        $ps and ($d3 or ($d1 and $x))
}

rule defender_exclusion
{
    meta:
        why = "Turns off or excludes files from Microsoft Defender or the firewall: malware disabling protection."
        severity = "8.0"
        category = "persistence"
    strings:
        $a = "Add-MpPreference" nocase
        $a2 = "Set-MpPreference" nocase
        $b = "ExclusionPath" nocase
        $c = "DisableRealtimeMonitoring" nocase
        $fw = /netsh\s+advfirewall\s+set\s+\w+\s+state\s+off/ nocase
    condition:
        (($a or $a2) and ($b or $c)) or $fw
}
