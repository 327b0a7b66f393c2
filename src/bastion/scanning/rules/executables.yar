rule embedded_pe
{
    meta:
        why = "A Windows executable (PE) inside a source distribution, which should hold source."
        severity = "2.0"
        category = "binary"
        only = "sdist"
    condition:
        uint16(0) == 0x5A4D and filesize >= 64 and uint32(0x3C) < 0x1000
}

rule embedded_elf
{
    meta:
        why = "A Linux executable or library (ELF) inside a source distribution, which should hold source."
        severity = "2.0"
        category = "binary"
        only = "sdist"
    condition:
        uint32(0) == 0x464C457F
}

rule embedded_macho
{
    meta:
        why = "A macOS executable (Mach-O) inside a source distribution, which should hold source."
        severity = "2.0"
        category = "binary"
        only = "sdist"
    condition:
        uint32(0) == 0xFEEDFACE or uint32(0) == 0xFEEDFACF or uint32(0) == 0xCEFAEDFE or uint32(0) == 0xCFFAEDFE
        or uint32(0) == 0xBEBAFECA
}
