rule pyarmor_protected
{
    meta:
        why = "PyArmor-protected code: the real code is encrypted and cannot be reviewed."
        severity = "4.0"
        category = "obfuscation"
    strings:
        $a = "__pyarmor__("
        $b = "pyarmor_runtime"
        $c = "__pyarmor_enter"
    condition:
        any of them
}

rule lambda_obfuscation
{
    meta:
        why = "Lambda obfuscation (`_ = lambda __ : __import__(...)` decoding a reversed or compressed blob)."
        severity = "7.0"
        category = "obfuscation"
    strings:
        $a = /_+\s*=\s*lambda\s+_+\s*:\s*__import__\(/
        $b = /lambda\s+_{2,}\s*:\s*__import__\(\s*['"](zlib|base64|marshal|lzma|bz2)['"]\s*\)/
        $c = /\)\(_+\)\(\s*b['"][^'"]{200}/
    condition:
        any of them
}

rule known_python_obfuscators
{
    meta:
        why = "Marker of a Python obfuscator used by malware (Hyperion, BlankOBF, Kramer, pyobfuscate, Development-Tools, Specter)."
        severity = "7.0"
        category = "obfuscation"
    strings:
        $hyperion = /__obfuscator__\s*=\s*['"]Hyperion/
        $blank = "BlankOBF" nocase
        $kramer = /Kramer[\s\S]{0,200}specter/ nocase
        $pyobf = /obfuscated (with|by) (pyobfuscate|PyObfuscate|Hyperion|BlankOBF|Kramer|Pyarmor|pyarmor|py-fuscate|Carbon)/ nocase
        $devtools = "_____=eval(" nocase
        $billy1 = "IlIlIlIlIlIl"
        $billy2 = "lIlIlIlIlIlI"
        $billy3 = "IIlIIlIIlIIl"
        $billy4 = "llIllIllIllI"
        $oxyry = "oxyry" nocase
    condition:
        any of them
}

rule exec_compressed_blob
{
    meta:
        why = "exec() of a decompressed or decoded blob written inline (zlib/base64/marshal)."
        severity = "7.0"
        category = "obfuscation"
    strings:
        $a = /exec\s*\(\s*(__import__\(\s*['"])?(zlib|lzma|bz2|marshal|base64)['"]?\)?\.(decompress|loads|b64decode|b32decode|b85decode)\(/
        $b = /exec\s*\(\s*(zlib|lzma|bz2|marshal|base64)\.(decompress|loads|b64decode)\(\s*(base64\.b64decode\()?\s*b?['"][A-Za-z0-9+\/=\\x]{200}/
    condition:
        any of them
}
