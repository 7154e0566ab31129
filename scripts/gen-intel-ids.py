#!/usr/bin/env python3
"""Generate agent/src/vendors/intel_ids.rs from a Linux kernel source tree.

    scripts/gen-intel-ids.py KERNEL_SRC            # rewrite the Rust table
    scripts/gen-intel-ids.py KERNEL_SRC --check    # exit 1 if it would change

KERNEL_SRC is an unpacked kernel tree (e.g. Debian's linux-source-X.Y package,
/usr/src/linux-source-X.Y.tar.xz; the committed table came from linux-source-7.2 7.2.13-1).
Needs python3 and rustfmt (the output is formatted as `cargo fmt` would). Nothing is downloaded and no kernel text is
copied: the script reads these files and writes only facts (ids, which driver
binds them, with or without `force_probe`, discrete or not, graphics IP):

  include/drm/intel/pciids.h          every id, grouped by platform macro
  drivers/gpu/drm/i915/i915_pci.c     the ids i915 binds, its per-platform info
  drivers/gpu/drm/xe/xe_pci.c         the ids xe binds, its per-platform desc
  drivers/gpu/drm/xe/tests/xe_pci.c   graphics IP of GMD_ID platforms (KUnit cases)

What is typed here, not read from the kernel: the marketing name of each
platform abbreviation (PLATFORMS below), and how a graphics IP version is named
as an architecture (arch_of). The script fails on an abbreviation it does not
know, so a new kernel platform cannot slip in unnamed (that is the drift check:
run it with --check against a newer kernel).
"""

import hashlib
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "agent", "src", "vendors", "intel_ids.rs")

FILES = {
    "pciids": "include/drm/intel/pciids.h",
    "i915": "drivers/gpu/drm/i915/i915_pci.c",
    "xe": "drivers/gpu/drm/xe/xe_pci.c",
    "xe_test": "drivers/gpu/drm/xe/tests/xe_pci.c",
}

# pciids.h macro abbreviation -> (Rust variant, marketing name, typed fallback
# arch used only where no kernel driver describes the platform).
PLATFORMS = {
    "I810": ("I810", "i810", "gen1"),
    "I815": ("I815", "i815", "gen1"),
    "I830": ("I830", "i830", None),
    "I845G": ("I845g", "845G", None),
    "I85X": ("I85x", "855GM", None),
    "I865G": ("I865g", "865G", None),
    "I915G": ("I915g", "915G", None),
    "I915GM": ("I915gm", "915GM", None),
    "I945G": ("I945g", "945G", None),
    "I945GM": ("I945gm", "945GM", None),
    "I965G": ("I965g", "965G", None),
    "G33": ("G33", "G33", None),
    "I965GM": ("I965gm", "965GM", None),
    "GM45": ("Gm45", "GM45", None),
    "G45": ("G45", "G45", None),
    "PNV": ("Pnv", "Pineview", None),
    "ILK": ("Ilk", "Ironlake", None),
    "SNB": ("Snb", "Sandy Bridge", None),
    "IVB": ("Ivb", "Ivy Bridge", None),
    "HSW": ("Hsw", "Haswell", None),
    "VLV": ("Vlv", "Bay Trail", None),
    "BDW": ("Bdw", "Broadwell", None),
    "CHV": ("Chv", "Cherry Trail", None),
    "SKL": ("Skl", "Skylake", None),
    "BXT": ("Bxt", "Apollo Lake", None),
    "GLK": ("Glk", "Gemini Lake", None),
    "KBL": ("Kbl", "Kaby Lake", None),
    "AML": ("Aml", "Amber Lake", None),
    "CFL": ("Cfl", "Coffee Lake", None),
    "WHL": ("Whl", "Whiskey Lake", None),
    "CML": ("Cml", "Comet Lake", None),
    "CNL": ("Cnl", "Cannon Lake", "gen10"),
    "ICL": ("Icl", "Ice Lake", None),
    "EHL": ("Ehl", "Elkhart Lake", None),
    "JSL": ("Jsl", "Jasper Lake", None),
    "TGL": ("Tgl", "Tiger Lake", None),
    "RKL": ("Rkl", "Rocket Lake", None),
    "DG1": ("Dg1", "DG1", None),
    "ADLS": ("AdlS", "Alder Lake-S", None),
    "ADLP": ("AdlP", "Alder Lake-P", None),
    "ADLN": ("AdlN", "Alder Lake-N", None),
    "RPLS": ("RplS", "Raptor Lake-S", None),
    "RPLU": ("RplU", "Raptor Lake-U", None),
    "RPLP": ("RplP", "Raptor Lake-P", None),
    "DG2": ("Dg2", "Alchemist", None),
    "ATS": ("AtsM", "Arctic Sound-M", None),
    "ARL": ("Arl", "Arrow Lake", None),
    "MTL": ("Mtl", "Meteor Lake", None),
    "PVC": ("Pvc", "Ponte Vecchio", None),
    "LNL": ("Lnl", "Lunar Lake", None),
    "BMG": ("Bmg", "Battlemage", None),
    "PTL": ("Ptl", "Panther Lake", None),
    "WCL": ("Wcl", "Wildcat Lake", None),
    "NVLS": ("NvlS", "Nova Lake-S", None),
    "CRI": ("Cri", "Crescent Island", None),
    "NVLP": ("NvlP", "Nova Lake-P", None),
}

# Ids no upstream driver binds, whose descriptor the kernel still carries:
# xe keeps `pvc_desc` (marked __maybe_unused) after dropping PVC from its list.
UNBOUND_DESC = {"PVC": ("xe", "pvc_desc")}


def arch_of(ver, rel):
    """Name a graphics IP version (i915 GEN(n) / ip.ver.rel, xe verx100)."""
    if ver < 12:
        return f"gen{ver}"
    if ver == 12 and rel in (0, 10):
        return "xe-lp"  # Xe_LP, Xe_LP+ (DG1)
    if ver == 12 and rel == 55:
        return "xe-hpg"
    if ver == 12 and rel == 60:
        return "xe-hpc"
    if ver == 12 and 70 <= rel <= 74:
        return "xe-lpg"  # Xe_LPG, Xe_LPG+
    if ver == 20:
        return "xe2"
    if ver == 30:
        return "xe3"
    if ver == 35:
        return "xe3p"
    sys.exit(f"no architecture name for graphics IP {ver}.{rel}")


def read(root, key):
    with open(os.path.join(root, FILES[key]), encoding="utf-8") as f:
        return f.read()


def join_lines(text):
    return re.sub(r"\\\n", " ", text)


def parse_pciids(text):
    """macro name -> (direct ids, included macro names), in order."""
    macros = {}
    for m in re.finditer(r"^#define (INTEL_\w+_IDS)\(MACRO__, \.\.\.\)(.*)$", join_lines(text), re.M):
        body = m.group(2)
        ids = [int(x, 16) for x in re.findall(r"MACRO__\((0[xX][0-9a-fA-F]+)", body)]
        incs = re.findall(r"(INTEL_\w+_IDS)\(MACRO__", body)
        macros[m.group(1)] = (ids, incs)
    return macros


def expand(macros, name, seen=()):
    ids, incs = macros[name]
    out = list(ids)
    for inc in incs:
        if inc in seen:
            sys.exit(f"macro loop at {inc}")
        out += expand(macros, inc, seen + (name,))
    return out


def owner_abbrev(macro):
    """INTEL_CFL_S_GT1_IDS -> CFL; INTEL_ATS_M150_IDS -> ATS; INTEL_AML_KBL_GT2_IDS -> AML."""
    core = macro[len("INTEL_"):-len("_IDS")]
    head = core.split("_")[0]
    if head not in PLATFORMS:
        sys.exit(f"pciids.h macro {macro}: unknown platform {head}; name it in PLATFORMS")
    return head


def c_defines(text):
    """Object-like macros of a C file: name -> body (continuations joined)."""
    out = {}
    for m in re.finditer(r"^#define (\w+)[ \t]+(.*)$", join_lines(text), re.M):
        out[m.group(1)] = m.group(2)
    return out


def c_structs(text, type_name):
    out = {}
    pat = r"static const (?:__maybe_unused )?struct " + type_name + r" (\w+) = \{(.*?)\n\};"
    for m in re.finditer(pat, text, re.S):
        out[m.group(1)] = m.group(2)
    return out


def expanded(body, defines, depth=0):
    if depth > 10:
        sys.exit("define expansion too deep")

    def sub(m):
        w = m.group(0)
        if w in defines and w not in ("GEN", "PLATFORM"):
            return expanded(defines[w], defines, depth + 1)
        return w

    return re.sub(r"\b[A-Z][A-Z0-9_]+\b", sub, body)


def pciidlist(text, arg):
    m = re.search(r"static const struct pci_device_id pciidlist\[\] = \{(.*?)\n\};", text, re.S)
    if not m:
        sys.exit("no pciidlist")
    return re.findall(r"(INTEL_\w+_IDS)\(" + arg + r", &(\w+)\)", m.group(1))


class Desc:
    def __init__(self, driver, name, force_probe, dgfx, ip, platform):
        self.driver, self.name = driver, name
        self.force_probe, self.dgfx, self.ip, self.platform = force_probe, dgfx, ip, platform


def i915_descs(text):
    defines = c_defines(text)
    out = {}
    for name, body in c_structs(text, "intel_device_info").items():
        full = expanded(body, defines)
        ver = rel = None
        for m in re.finditer(r"GEN\((\d+)\)|graphics\.ip\.ver = (\d+)|graphics\.ip\.rel = (\d+)", full):
            if m.group(1):
                ver, rel = int(m.group(1)), 0
            elif m.group(2):
                ver = int(m.group(2))
            else:
                rel = int(m.group(3))
        fp = re.search(r"require_force_probe = (1|true)", full) is not None
        dgfx = re.search(r"is_dgfx = 1", full) is not None
        out[name] = Desc("i915", name, fp, dgfx, (ver, rel or 0) if ver else None, None)
    return out


def xe_descs(text, test_text):
    defines = c_defines(text)
    ips = {m.group(1): int(m.group(2)) for m in re.finditer(r"static const struct xe_ip (\w+) = \{ (\d+),", text)}
    gmdid = {}
    for m in re.finditer(r"GMDID_CASE\((\w+), (\d+),", test_text):
        gmdid.setdefault(m.group(1), set()).add(int(m.group(2)))
    out = {}
    for name, body in c_structs(text, "xe_device_desc").items():
        full = expanded(body, defines)
        plat = re.search(r"PLATFORM\((\w+)\)", full)
        plat = plat.group(1) if plat else None
        ip = None
        m = re.search(r"pre_gmdid_graphics_ip = &(\w+)", full)
        if m:
            v = ips[m.group(1)]
            ip = {(v // 100, v % 100)}
        elif plat in gmdid:
            ip = {(v // 100, v % 100) for v in gmdid[plat]}
        fp = re.search(r"require_force_probe = (1|true)", full) is not None
        dgfx = re.search(r"is_dgfx = 1", full) is not None
        out[name] = Desc("xe", name, fp, dgfx, ip, plat)
    return out


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--check"):
        sys.exit(__doc__)
    root = sys.argv[1]
    texts = {k: read(root, k) for k in FILES}
    mk = re.search(r"^VERSION = (\d+)\nPATCHLEVEL = (\d+)\nSUBLEVEL = (\d+)\nEXTRAVERSION =(.*)$",
                   open(os.path.join(root, "Makefile"), encoding="utf-8").read(), re.M)
    version = f"{mk.group(1)}.{mk.group(2)}.{mk.group(3)}{mk.group(4).strip()}"

    macros = parse_pciids(texts["pciids"])
    owner = {}  # id -> abbreviation of the macro that lists it directly
    for name, (ids, _) in macros.items():
        for i in ids:
            ab = owner_abbrev(name)
            if i in owner and owner[i] != ab:
                sys.exit(f"{i:#06x} listed under {owner[i]} and {ab}")
            owner[i] = ab

    descs = {"i915": i915_descs(texts["i915"]), "xe": xe_descs(texts["xe"], texts["xe_test"])}
    binds = {"i915": {}, "xe": {}}  # id -> Desc
    for drv, arg in (("i915", "INTEL_VGA_DEVICE"), ("xe", "INTEL_(?:VGA|PCI)_DEVICE")):
        for macro, desc in pciidlist(texts[drv], arg):
            for i in expand(macros, macro):
                binds[drv].setdefault(i, descs[drv][desc])

    # Per platform: arch and discrete from every descriptor that describes it.
    plat_arch, plat_dgfx = {}, {}
    for i, ab in owner.items():
        ds = [b[i] for b in binds.values() if i in b]
        if not ds and ab in UNBOUND_DESC:
            drv, d = UNBOUND_DESC[ab]
            ds = [descs[drv][d]]
        for d in ds:
            ips = d.ip if isinstance(d.ip, set) else ({d.ip} if d.ip else set())
            for ver, rel in ips:
                plat_arch.setdefault(ab, set()).add(arch_of(ver, rel))
            plat_dgfx.setdefault(ab, set()).add(d.dgfx)
    for ab, s in list(plat_arch.items()) + list(plat_dgfx.items()):
        if len(s) != 1:
            sys.exit(f"{ab}: the kernel descriptors disagree: {sorted(s)}")

    def bind(drv, i):
        d = binds[drv].get(i)
        if d is None:
            return "Bind::No"
        return "Bind::ForceProbe" if d.force_probe else "Bind::Default"

    used = sorted(set(owner.values()), key=list(PLATFORMS).index)
    lines = []
    w = lines.append
    w("// @generated by scripts/gen-intel-ids.py from a Linux kernel tree; do not edit.")
    w(f"// Kernel {version}, inputs (sha256):")
    for k in ("pciids", "i915", "xe", "xe_test"):
        w(f"//   {FILES[k]} {hashlib.sha256(texts[k].encode()).hexdigest()}")
    w("")
    w("use super::intel::{Bind, IdRow, PlatformRow};")
    w("")
    w("/// The kernel release the tables were generated from.")
    w(f'pub const KERNEL_VERSION: &str = "{version}";')
    w("")
    w("/// Every platform of `pciids.h`: name (typed in the script), architecture (from the")
    w("/// graphics IP the i915/xe descriptor or xe's GMD_ID KUnit cases give; `None` where the")
    w("/// kernel names none), discrete (`is_dgfx` of the descriptor).")
    w("pub const PLATFORMS: &[PlatformRow] = &[")
    for ab in used:
        var, name, fallback = PLATFORMS[ab]
        arch = next(iter(plat_arch.get(ab, {fallback})))
        dgfx = next(iter(plat_dgfx.get(ab, {False})))
        arch_s = f'Some("{arch}")' if arch else "None"
        w(f'    PlatformRow {{ platform: Platform::{var}, kernel: "{ab}", name: "{name}", arch: {arch_s}, discrete: {str(dgfx).lower()} }},')
    w("];")
    w("")
    w("/// Every id of `pciids.h`, sorted: its platform and how i915 and xe bind it.")
    w("pub const IDS: &[IdRow] = &[")
    for i in sorted(owner):
        var = PLATFORMS[owner[i]][0]
        w(f"    IdRow {{ id: {i:#06x}, platform: Platform::{var}, i915: {bind('i915', i)}, xe: {bind('xe', i)} }},")
    w("];")
    w("")
    w("/// Every platform of `pciids.h`, named after its kernel abbreviation.")
    w("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]")
    w("pub enum Platform {")
    for ab in used:
        w(f"    /// `{ab}`: {PLATFORMS[ab][1]}")
        w(f"    {PLATFORMS[ab][0]},")
    w("}")
    text = "\n".join(lines) + "\n"
    # Format as `cargo fmt` would, so the committed file and --check agree.
    text = subprocess.run(["rustfmt", "--edition", "2024", "--emit", "stdout"], input=text,
                          capture_output=True, text=True, check=True).stdout
    if len(sys.argv) == 3:
        old = open(OUT, encoding="utf-8").read() if os.path.exists(OUT) else ""
        if old != text:
            sys.exit(f"{OUT} is out of date against kernel {version}: rerun without --check")
        print(f"intel_ids.rs matches kernel {version}")
        return
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(owner)} ids, {len(used)} platforms, kernel {version}")


if __name__ == "__main__":
    main()
