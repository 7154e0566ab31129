/*
 * nvml_double.c: a scriptable stand-in for libnvidia-ml.so.1, built by the test suite with the
 * system `cc` and loaded by the real nvml-wrapper through `lib_path`.
 *
 * It exports the NVML entry points gpuscout calls (names and struct layouts as in
 * nvml-wrapper-sys 0.10 / nvml.h) and answers as strictly as nvml.h documents them (checked
 * against NVIDIA/go-nvml gen/nvml/nvml.h @ 2f9e261, NVML API 13): a lost GPU answers
 * NVML_ERROR_GPU_IS_LOST to every call on it, getting its handle and PCI info included; ECC
 * counters need ECC mode on and honour the counter type; utilisation is not supported on a
 * MIG-enabled GPU; nvmlEventSetWait_v2 waits up to its timeout for an event.
 * Its behaviour comes from `nvml_double.conf` in the directory
 * the library itself was loaded from (found with dladdr), so every test copies the library into
 * its own temporary directory and scripts it there; no environment variables, no shared state
 * between tests (each copy is a different inode, so the loader maps it separately).
 *
 * Config (`key=value`, one per line, `#` comments):
 *   init=ok | driver_not_loaded | rm_mismatch | no_permission   (what nvmlInit returns)
 *   init_fail_count=N    fail the first N inits with `init`, then succeed (counted in the file
 *                        `init_attempts` next to the library, which survives dlclose)
 *   driver_version=550.127.05   cuda_version=12040
 *   hang=<symbol>        that call blocks until a file `release` appears next to the library;
 *                        when it returns, `<symbol> returned` is appended to calls.log
 *   hang_count=N         only the first N calls of <symbol> block (0 or absent: every call)
 *   gpu.I.<field>=V      per GPU I (0-based, count = highest I + 1). Fields: bus_id, name, uuid,
 *     pci_device_id (hex), pci_subsystem_id (hex), mem_total, mem_used, mem_free, mem_reserved,
 *     util_gpu, util_mem, temp, power_mw, power_limit_mw, enforced_limit_mw, energy_mj,
 *     clock_graphics, clock_sm, clock_mem, max_clock_graphics, max_clock_sm, max_clock_mem,
 *     cc (e.g. 8.9), arch (NVML number: 8 = Ada, 9 = Hopper), mig_current, mig_pending,
 *     mig_max, mig_devices, ecc_corrected, ecc_uncorrected, pcie_gen, pcie_width,
 *     pcie_max_gen, pcie_max_width, xid (comma-separated list of XIDs queued as events),
 *     ecc_mode (1: ECC on; unset or 0: the ECC counters answer NOT_SUPPORTED, as on a GeForce),
 *     ecc_corrected_volatile, ecc_uncorrected_volatile (NVML_VOLATILE_ECC; the plain
 *     ecc_corrected / ecc_uncorrected are NVML_AGGREGATE_ECC),
 *     lost=1        the GPU has fallen off the bus: every call on it, nvmlDeviceGetHandleByIndex_v2
 *                   and nvmlDeviceGetPciInfo_v3 included, answers NVML_ERROR_GPU_IS_LOST
 *     lost_at=CALL  the GPU answers normally until the first call of CALL, which (and every call
 *                   after it) answers GPU_IS_LOST. CALL is a symbol, `handle`
 *                   (nvmlDeviceGetHandleByIndex_v2), `pci` (nvmlDeviceGetPciInfo_v3) or `xid`
 *                   (the GPU is lost once its first XID event has been delivered, like XID 79)
 *     error.CALL=E  CALL (a symbol, `handle` or `pci`) on this GPU answers E: no_permission,
 *                   not_supported, not_found, insufficient_power, irq_issue or unknown
 *     procs=PID:BYTES,... (compute processes; BYTES `na` = NVML_VALUE_NOT_AVAILABLE),
 *     gprocs=PID:BYTES,... (graphics processes), psamples=PID:SM:ENC:DEC,... (process utilisation
 *     samples, stamped with the current CLOCK_REALTIME in microseconds at each call, returned when
 *     newer than lastSeenTimeStamp; none configured: NVML_ERROR_NOT_FOUND), mig_uuid.J=MIG-...
 *     (UUID of MIG device handle J)
 *   A field that is not set makes its call return NVML_ERROR_NOT_SUPPORTED.
 *   xid_gate=NAME   queued XIDs are delivered only once a file NAME exists next to the library
 *                   (an XID that happens while the agent is running, not before it started)
 *
 * Every call is appended to `calls.log` next to the library (one symbol per line), so tests can
 * see which calls happened; `log_calls=0` turns that off (benchmarks).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_INSUFFICIENT_POWER 8
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_IRQ_ISSUE 11
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_LIB_RM_VERSION_MISMATCH 18
#define NVML_ERROR_UNKNOWN 999

/* nvmlMemoryErrorType_t and nvmlEccCounterType_t */
#define NVML_MEMORY_ERROR_TYPE_CORRECTED 0
#define NVML_MEMORY_ERROR_TYPE_UNCORRECTED 1
#define NVML_VOLATILE_ECC 0
#define NVML_AGGREGATE_ECC 1

#define MAX_GPUS 16
#define MAX_XIDS 64
#define MAX_ERRORS 16
#define SYM_LEN 96
#define MAX_PROCS 32

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

/* nvmlProcessInfo_t of the _v3 process calls (nvmlProcessInfo_v2_t layout). */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    unsigned int pid;
    unsigned long long mem;
} proc_t;

typedef struct {
    unsigned int pid, sm, enc, dec;
} psample_t;

typedef struct gpu gpu_t;
typedef gpu_t *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct eventset {
    int registered[MAX_GPUS];
} *nvmlEventSet_t;

/* A value that may be unset (unset: the call says NOT_SUPPORTED). */
typedef struct {
    int set;
    unsigned long long v;
} opt_t;

struct gpu {
    int index;
    int present;
    char bus_id[32];
    char name[96];
    char uuid[96];
    opt_t pci_device_id, pci_subsystem_id;
    opt_t mem_total, mem_used, mem_free, mem_reserved;
    opt_t util_gpu, util_mem, temp, power_mw, power_limit_mw, enforced_limit_mw, energy_mj;
    opt_t clock_graphics, clock_sm, clock_mem, max_clock_graphics, max_clock_sm, max_clock_mem;
    opt_t cc_major, cc_minor, arch, mig_current, mig_pending, mig_max, mig_devices;
    opt_t ecc_corrected, ecc_uncorrected, pcie_gen, pcie_width, pcie_max_gen, pcie_max_width;
    opt_t ecc_mode, ecc_corrected_volatile, ecc_uncorrected_volatile;
    int lost;              /* fallen off the bus: every call answers GPU_IS_LOST */
    char lost_at[SYM_LEN]; /* the first call of this symbol makes the GPU lost */
    struct {
        char sym[SYM_LEN];
        nvmlReturn_t code;
    } errors[MAX_ERRORS];  /* scripted per-call errors */
    int n_errors;
    proc_t procs[MAX_PROCS], gprocs[MAX_PROCS];
    int n_procs, n_gprocs;
    psample_t psamples[MAX_PROCS];
    int n_psamples;
    unsigned long long xids[MAX_XIDS];
    int n_xids, next_xid;
};

static gpu_t gpus[MAX_GPUS];
/* MIG device handles: their own objects so they are distinct handles. */
static gpu_t mig_handles[MAX_GPUS][8];
static int n_gpus;
static int initialized;
static char dir[PATH_MAX];
static char driver_version[80] = "550.127.05";
static int cuda_version = 12040;
static char init_mode[32] = "ok";
static int init_fail_count;
static char hang_sym[SYM_LEN];
static char xid_gate[SYM_LEN];
static int hang_count;
static int log_enabled = 1;

static void find_dir(void) {
    Dl_info info;
    if (dir[0]) return;
    if (dladdr((void *)&find_dir, &info) && info.dli_fname) {
        strncpy(dir, info.dli_fname, sizeof dir - 1);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else strcpy(dir, ".");
    } else {
        strcpy(dir, ".");
    }
}

static void path_of(char *out, size_t n, const char *name) {
    find_dir();
    snprintf(out, n, "%s/%s", dir, name);
}

static void log_call(const char *sym) {
    if (!log_enabled) return;
    char p[PATH_MAX + 32];
    path_of(p, sizeof p, "calls.log");
    FILE *f = fopen(p, "a");
    if (f) { fprintf(f, "%s\n", sym); fclose(f); }
}

/* Read, increment and write back a counter file; returns the new value. */
static int bump(const char *name) {
    char p[PATH_MAX + 32];
    int n = 0;
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "r");
    if (f) { if (fscanf(f, "%d", &n) != 1) n = 0; fclose(f); }
    n++;
    f = fopen(p, "w");
    if (f) { fprintf(f, "%d\n", n); fclose(f); }
    return n;
}

/* Block while this symbol is scripted to hang, until `release` appears. */
static void maybe_hang(const char *sym) {
    if (!hang_sym[0] || strcmp(hang_sym, sym) != 0) return;
    int hit = bump("hang_hits");
    if (hang_count > 0 && hit > hang_count) return;
    char p[PATH_MAX + 32];
    path_of(p, sizeof p, "release");
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (access(p, F_OK) != 0) nanosleep(&ts, NULL);
    char done[SYM_LEN + 16];
    snprintf(done, sizeof done, "%s returned", sym);
    log_call(done); /* so a test can tell an answer that came while the call still hung */
}

#define ENTER(sym)                  \
    do {                            \
        log_call(sym);              \
        maybe_hang(sym);            \
    } while (0)

/* Short names for the calls a test most often scripts. */
static const char *symbol_of(const char *s) {
    if (!strcmp(s, "handle")) return "nvmlDeviceGetHandleByIndex_v2";
    if (!strcmp(s, "pci")) return "nvmlDeviceGetPciInfo_v3";
    return s;
}

static nvmlReturn_t error_named(const char *v) {
    if (!strcmp(v, "no_permission")) return NVML_ERROR_NO_PERMISSION;
    if (!strcmp(v, "not_supported")) return NVML_ERROR_NOT_SUPPORTED;
    if (!strcmp(v, "not_found")) return NVML_ERROR_NOT_FOUND;
    if (!strcmp(v, "insufficient_power")) return NVML_ERROR_INSUFFICIENT_POWER;
    if (!strcmp(v, "irq_issue")) return NVML_ERROR_IRQ_ISSUE;
    if (strcmp(v, "unknown") != 0)
        fprintf(stderr, "nvml_double: unknown error name %s, answering NVML_ERROR_UNKNOWN\n", v);
    return NVML_ERROR_UNKNOWN;
}

/* What the script says `sym` on GPU `g` answers: GPU_IS_LOST once the GPU is lost (which the
 * first call of its `lost_at` symbol makes it), a scripted error, or SUCCESS. */
static nvmlReturn_t scripted(gpu_t *g, const char *sym) {
    if (!g->lost && g->lost_at[0] && !strcmp(g->lost_at, sym)) g->lost = 1;
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;
    for (int i = 0; i < g->n_errors; i++)
        if (!strcmp(g->errors[i].sym, sym)) return g->errors[i].code;
    return NVML_SUCCESS;
}

static void set_opt(opt_t *o, const char *v, int base) {
    o->set = 1;
    o->v = strtoull(v, NULL, base);
}

/* "PID:BYTES,PID:BYTES" into procs. */
static int parse_procs(proc_t *out, const char *v) {
    int n = 0;
    const char *s = v;
    while (*s && n < MAX_PROCS) {
        out[n].pid = (unsigned int)strtoul(s, NULL, 10);
        const char *colon = strchr(s, ':');
        const char *comma = strchr(s, ',');
        if (colon && (!comma || colon < comma))
            out[n].mem = strncmp(colon + 1, "na", 2) == 0 ? 0xFFFFFFFFFFFFFFFFULL : strtoull(colon + 1, NULL, 10);
        n++;
        if (!comma) break;
        s = comma + 1;
    }
    return n;
}

/* "PID:SM:ENC:DEC,..." into samples. */
static int parse_psamples(psample_t *out, const char *v) {
    int n = 0;
    const char *s = v;
    while (*s && n < MAX_PROCS) {
        if (sscanf(s, "%u:%u:%u:%u", &out[n].pid, &out[n].sm, &out[n].enc, &out[n].dec) == 4) n++;
        const char *comma = strchr(s, ',');
        if (!comma) break;
        s = comma + 1;
    }
    return n;
}

static void set_gpu_field(gpu_t *g, const char *k, const char *v) {
#define NUM(field) else if (!strcmp(k, #field)) set_opt(&g->field, v, 10)
    if (!strcmp(k, "bus_id")) strncpy(g->bus_id, v, sizeof g->bus_id - 1);
    else if (!strcmp(k, "name")) strncpy(g->name, v, sizeof g->name - 1);
    else if (!strcmp(k, "uuid")) strncpy(g->uuid, v, sizeof g->uuid - 1);
    else if (!strcmp(k, "pci_device_id")) set_opt(&g->pci_device_id, v, 16);
    else if (!strcmp(k, "pci_subsystem_id")) set_opt(&g->pci_subsystem_id, v, 16);
    else if (!strcmp(k, "cc")) {
        set_opt(&g->cc_major, v, 10);
        const char *dot = strchr(v, '.');
        set_opt(&g->cc_minor, dot ? dot + 1 : "0", 10);
    }
    else if (!strcmp(k, "lost")) g->lost = atoi(v);
    else if (!strcmp(k, "lost_at")) strncpy(g->lost_at, symbol_of(v), sizeof g->lost_at - 1);
    else if (!strncmp(k, "error.", 6)) {
        if (g->n_errors < MAX_ERRORS) {
            strncpy(g->errors[g->n_errors].sym, symbol_of(k + 6), SYM_LEN - 1);
            g->errors[g->n_errors].code = error_named(v);
            g->n_errors++;
        }
    }
    else if (!strcmp(k, "procs")) g->n_procs = parse_procs(g->procs, v);
    else if (!strcmp(k, "gprocs")) g->n_gprocs = parse_procs(g->gprocs, v);
    else if (!strcmp(k, "psamples")) g->n_psamples = parse_psamples(g->psamples, v);
    else if (!strncmp(k, "mig_uuid.", 9)) {
        int j = atoi(k + 9);
        if (j >= 0 && j < 8) strncpy(mig_handles[g->index][j].uuid, v, sizeof g->uuid - 1);
    }
    else if (!strcmp(k, "xid")) {
        const char *s = v;
        while (*s && g->n_xids < MAX_XIDS) {
            g->xids[g->n_xids++] = strtoull(s, NULL, 10);
            const char *c = strchr(s, ',');
            if (!c) break;
            s = c + 1;
        }
    }
    NUM(mem_total); NUM(mem_used); NUM(mem_free); NUM(mem_reserved);
    NUM(util_gpu); NUM(util_mem); NUM(temp); NUM(power_mw); NUM(power_limit_mw);
    NUM(enforced_limit_mw); NUM(energy_mj); NUM(clock_graphics); NUM(clock_sm); NUM(clock_mem);
    NUM(max_clock_graphics); NUM(max_clock_sm); NUM(max_clock_mem); NUM(arch);
    NUM(mig_current); NUM(mig_pending); NUM(mig_max); NUM(mig_devices);
    NUM(ecc_corrected); NUM(ecc_uncorrected); NUM(pcie_gen); NUM(pcie_width);
    NUM(pcie_max_gen); NUM(pcie_max_width);
    NUM(ecc_mode); NUM(ecc_corrected_volatile); NUM(ecc_uncorrected_volatile);
#undef NUM
}

static void load_config(void) {
    char p[PATH_MAX + 32], line[512];
    memset(gpus, 0, sizeof gpus);
    memset(mig_handles, 0, sizeof mig_handles);
    n_gpus = 0;
    hang_sym[0] = 0;
    xid_gate[0] = 0;
    hang_count = 0;
    init_fail_count = 0;
    strcpy(init_mode, "ok");
    log_enabled = 1;
    path_of(p, sizeof p, "nvml_double.conf");
    FILE *f = fopen(p, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        const char *k = line, *v = eq + 1;
        if (!strcmp(k, "init")) strncpy(init_mode, v, sizeof init_mode - 1);
        else if (!strcmp(k, "init_fail_count")) init_fail_count = atoi(v);
        else if (!strcmp(k, "driver_version")) strncpy(driver_version, v, sizeof driver_version - 1);
        else if (!strcmp(k, "cuda_version")) cuda_version = atoi(v);
        else if (!strcmp(k, "hang")) strncpy(hang_sym, v, sizeof hang_sym - 1);
        else if (!strcmp(k, "hang_count")) hang_count = atoi(v);
        else if (!strcmp(k, "xid_gate")) strncpy(xid_gate, v, sizeof xid_gate - 1);
        else if (!strcmp(k, "log_calls")) log_enabled = atoi(v);
        else if (!strncmp(k, "gpu.", 4)) {
            char *end;
            long i = strtol(k + 4, &end, 10);
            if (i < 0 || i >= MAX_GPUS || *end != '.') continue;
            gpus[i].present = 1;
            gpus[i].index = (int)i;
            if (i + 1 > n_gpus) n_gpus = (int)i + 1;
            set_gpu_field(&gpus[i], end + 1, v);
        }
    }
    fclose(f);
}

static nvmlReturn_t do_init(const char *sym) {
    load_config(); /* first, so that `hang=nvmlInit_v2` is known */
    ENTER(sym);
    int attempt = bump("init_attempts");
    if (strcmp(init_mode, "ok") != 0 && (init_fail_count == 0 || attempt <= init_fail_count)) {
        if (!strcmp(init_mode, "driver_not_loaded")) return NVML_ERROR_DRIVER_NOT_LOADED;
        if (!strcmp(init_mode, "rm_mismatch")) return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
        if (!strcmp(init_mode, "no_permission")) return NVML_ERROR_NO_PERMISSION;
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    initialized = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return do_init("nvmlInitWithFlags"); }
nvmlReturn_t nvmlShutdown(void) { log_call("nvmlShutdown"); initialized = 0; return NVML_SUCCESS; }

static nvmlReturn_t copy_str(char *out, unsigned int len, const char *s) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, s);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int len) {
    ENTER("nvmlSystemGetDriverVersion");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_str(version, len, driver_version);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    ENTER("nvmlSystemGetCudaDriverVersion_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (cuda_version <= 0) return NVML_ERROR_NOT_SUPPORTED;
    *v = cuda_version;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    *count = (unsigned int)n_gpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *dev) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (i >= (unsigned int)n_gpus || !gpus[i].present || !dev) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = scripted(&gpus[i], "nvmlDeviceGetHandleByIndex_v2");
    if (r != NVML_SUCCESS) return r;
    *dev = &gpus[i];
    return NVML_SUCCESS;
}

/* Common checks for a device call: initialised, a device, and what the script says. */
#define DEV(sym, d)                                                   \
    ENTER(sym);                                                       \
    if (!initialized) return NVML_ERROR_UNINITIALIZED;                \
    if (!(d)) return NVML_ERROR_INVALID_ARGUMENT;                     \
    do {                                                              \
        nvmlReturn_t r_ = scripted((d), (sym));                       \
        if (r_ != NVML_SUCCESS) return r_;                            \
    } while (0)

#define GET_UINT(sym, field)                                          \
    nvmlReturn_t sym(nvmlDevice_t d, unsigned int *out) {             \
        DEV(#sym, d);                                                 \
        if (!d->field.set) return NVML_ERROR_NOT_SUPPORTED;           \
        *out = (unsigned int)d->field.v;                              \
        return NVML_SUCCESS;                                          \
    }

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    DEV("nvmlDeviceGetPciInfo_v3", d);
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->bus_id[0]) return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    strncpy(pci->busId, d->bus_id, sizeof pci->busId - 1);
    unsigned int dom = 0, bus = 0, dev = 0;
    sscanf(d->bus_id, "%x:%x:%x", &dom, &bus, &dev);
    pci->domain = dom;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = (unsigned int)d->pci_device_id.v;
    pci->pciSubSystemId = (unsigned int)d->pci_subsystem_id.v;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", dom & 0xffff, bus, dev);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    DEV("nvmlDeviceGetName", d);
    if (!d->name[0]) return NVML_ERROR_NOT_SUPPORTED;
    return copy_str(name, len, d->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    DEV("nvmlDeviceGetUUID", d);
    if (!d->uuid[0]) return NVML_ERROR_NOT_SUPPORTED;
    return copy_str(uuid, len, d->uuid);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    DEV("nvmlDeviceGetMemoryInfo_v2", d);
    if (!d->mem_total.set) return NVML_ERROR_NOT_SUPPORTED;
    if ((m->version >> 24) != 2 || (m->version & 0xffffff) != sizeof *m)
        return NVML_ERROR_INVALID_ARGUMENT; /* the real library checks the struct version */
    m->total = d->mem_total.v;
    m->used = d->mem_used.v;
    m->free = d->mem_free.set ? d->mem_free.v : d->mem_total.v - d->mem_used.v;
    m->reserved = d->mem_reserved.v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    DEV("nvmlDeviceGetUtilizationRates", d);
    /* nvml.h: "On MIG-enabled GPUs, querying device utilization rates is not currently
     * supported." */
    if (d->mig_current.set && d->mig_current.v == 1) return NVML_ERROR_NOT_SUPPORTED;
    if (!d->util_gpu.set) return NVML_ERROR_NOT_SUPPORTED;
    u->gpu = (unsigned int)d->util_gpu.v;
    u->memory = (unsigned int)d->util_mem.v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    DEV("nvmlDeviceGetTemperature", d);
    if (sensor != 0 || !d->temp.set) return NVML_ERROR_NOT_SUPPORTED;
    *t = (unsigned int)d->temp.v;
    return NVML_SUCCESS;
}

GET_UINT(nvmlDeviceGetPowerUsage, power_mw)
GET_UINT(nvmlDeviceGetPowerManagementLimit, power_limit_mw)
GET_UINT(nvmlDeviceGetEnforcedPowerLimit, enforced_limit_mw)
GET_UINT(nvmlDeviceGetArchitecture, arch)
GET_UINT(nvmlDeviceGetMaxMigDeviceCount, mig_max)
GET_UINT(nvmlDeviceGetCurrPcieLinkGeneration, pcie_gen)
GET_UINT(nvmlDeviceGetCurrPcieLinkWidth, pcie_width)
GET_UINT(nvmlDeviceGetMaxPcieLinkGeneration, pcie_max_gen)
GET_UINT(nvmlDeviceGetMaxPcieLinkWidth, pcie_max_width)

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *e) {
    DEV("nvmlDeviceGetTotalEnergyConsumption", d);
    if (!d->energy_mj.set) return NVML_ERROR_NOT_SUPPORTED;
    *e = d->energy_mj.v;
    return NVML_SUCCESS;
}

static nvmlReturn_t clock_of(opt_t *g, opt_t *sm, opt_t *mem, int type, unsigned int *out) {
    opt_t *o = type == 0 ? g : type == 1 ? sm : type == 2 ? mem : NULL;
    if (!o || !o->set) return NVML_ERROR_NOT_SUPPORTED;
    *out = (unsigned int)o->v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *c) {
    DEV("nvmlDeviceGetClockInfo", d);
    return clock_of(&d->clock_graphics, &d->clock_sm, &d->clock_mem, type, c);
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned int *c) {
    DEV("nvmlDeviceGetMaxClockInfo", d);
    return clock_of(&d->max_clock_graphics, &d->max_clock_sm, &d->max_clock_mem, type, c);
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    DEV("nvmlDeviceGetCudaComputeCapability", d);
    if (!d->cc_major.set) return NVML_ERROR_NOT_SUPPORTED;
    *major = (int)d->cc_major.v;
    *minor = (int)d->cc_minor.v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    DEV("nvmlDeviceGetMigMode", d);
    if (!d->mig_current.set) return NVML_ERROR_NOT_SUPPORTED;
    *current = (unsigned int)d->mig_current.v;
    *pending = d->mig_pending.set ? (unsigned int)d->mig_pending.v : (unsigned int)d->mig_current.v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int i, nvmlDevice_t *mig) {
    DEV("nvmlDeviceGetMigDeviceHandleByIndex", d);
    if (!d->mig_max.set) return NVML_ERROR_NOT_SUPPORTED;
    if (i >= d->mig_max.v || i >= 8) return NVML_ERROR_INVALID_ARGUMENT;
    if (i >= d->mig_devices.v) return NVML_ERROR_NOT_FOUND;
    *mig = &mig_handles[d->index][i];
    return NVML_SUCCESS;
}

/* nvml.h: "Only applicable to devices with ECC. Requires ECC Mode to be enabled." */
nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter, unsigned long long *n) {
    DEV("nvmlDeviceGetTotalEccErrors", d);
    if ((type != NVML_MEMORY_ERROR_TYPE_CORRECTED && type != NVML_MEMORY_ERROR_TYPE_UNCORRECTED) ||
        (counter != NVML_VOLATILE_ECC && counter != NVML_AGGREGATE_ECC) || !n)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->ecc_mode.set || d->ecc_mode.v != 1) return NVML_ERROR_NOT_SUPPORTED;
    int corrected = type == NVML_MEMORY_ERROR_TYPE_CORRECTED;
    opt_t *o = counter == NVML_AGGREGATE_ECC
                   ? (corrected ? &d->ecc_corrected : &d->ecc_uncorrected)
                   : (corrected ? &d->ecc_corrected_volatile : &d->ecc_uncorrected_volatile);
    if (!o->set) return NVML_ERROR_NOT_SUPPORTED;
    *n = o->v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    DEV("nvmlDeviceGetEccMode", d);
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->ecc_mode.set) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned int)d->ecc_mode.v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    ENTER("nvmlEventSetCreate");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    *set = calloc(1, sizeof **set); /* each set its own: a caller may hold several */
    return *set ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    DEV("nvmlDeviceRegisterEvents", d);
    if (!(types & 8ULL)) return NVML_ERROR_NOT_SUPPORTED;
    set->registered[d->index] = 1;
    return NVML_SUCCESS;
}

/* The next queued XID of a GPU in `set`, if the gate (when scripted) is open. */
static int take_xid(nvmlEventSet_t set, nvmlEventData_t *data) {
    if (xid_gate[0]) {
        char p[PATH_MAX + 32];
        path_of(p, sizeof p, xid_gate);
        if (access(p, F_OK) != 0) return 0;
    }
    for (int i = 0; i < n_gpus; i++) {
        gpu_t *g = &gpus[i];
        if (!set->registered[i] || g->next_xid >= g->n_xids) continue;
        memset(data, 0, sizeof *data);
        data->device = g;
        data->eventType = 8ULL; /* nvmlEventTypeXidCriticalError */
        data->eventData = g->xids[g->next_xid++];
        data->gpuInstanceId = 0xffffffffu;
        data->computeInstanceId = 0xffffffffu;
        if (!strcmp(g->lost_at, "xid")) g->lost = 1; /* XID 79: it fell off the bus */
        return 1;
    }
    return 0;
}

/* nvml.h: returns at once when an event is ready, else sleeps until one arrives but not longer
 * than `timeout_ms`, then NVML_ERROR_TIMEOUT. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms) {
    ENTER("nvmlEventSetWait_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!set || !data) return NVML_ERROR_INVALID_ARGUMENT;
    const unsigned int step_ms = 5;
    struct timespec step = {0, step_ms * 1000 * 1000};
    for (unsigned int waited = 0;; waited += step_ms) {
        if (take_xid(set, data)) return NVML_SUCCESS;
        if (waited >= timeout_ms) return NVML_ERROR_TIMEOUT;
        nanosleep(&step, NULL);
    }
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    ENTER("nvmlEventSetFree");
    free(set);
    return NVML_SUCCESS;
}

/* The _v3 process lists: the count when the buffer is short, like the real library. */
static nvmlReturn_t proc_list(proc_t *src, int n, unsigned int *count, nvmlProcessInfo_t *infos) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (!infos || *count < (unsigned int)n) {
        *count = (unsigned int)n;
        return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (int i = 0; i < n; i++) {
        infos[i].pid = src[i].pid;
        infos[i].usedGpuMemory = src[i].mem;
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    *count = (unsigned int)n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    DEV("nvmlDeviceGetComputeRunningProcesses_v3", d);
    return proc_list(d->procs, d->n_procs, count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    DEV("nvmlDeviceGetGraphicsRunningProcesses_v3", d);
    return proc_list(d->gprocs, d->n_gprocs, count, infos);
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *count, unsigned long long lastSeenTimeStamp) {
    DEV("nvmlDeviceGetProcessUtilization", d);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned long long ts = (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000ULL;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->n_psamples == 0 || ts <= lastSeenTimeStamp) return NVML_ERROR_NOT_FOUND;
    if (!utilization || *count < (unsigned int)d->n_psamples) {
        *count = (unsigned int)d->n_psamples;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (int i = 0; i < d->n_psamples; i++) {
        utilization[i].pid = d->psamples[i].pid;
        utilization[i].timeStamp = ts;
        utilization[i].smUtil = d->psamples[i].sm;
        utilization[i].memUtil = 0;
        utilization[i].encUtil = d->psamples[i].enc;
        utilization[i].decUtil = d->psamples[i].dec;
    }
    *count = (unsigned int)d->n_psamples;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    (void)r;
    return "nvml double error";
}
