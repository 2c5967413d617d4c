// A toy C++17 "engine" using libsparkdaemon the way a real one would: settings from SPARK_DAEMON_* at start-up,
// a tiered shader cache (its own local directory, the shared daemon in front), shutdown in reverse order.
//
//   engine NAME CACHE_DIR SHADER_DIR [--permutations N] [--pause]
//
// It compiles the real GLSL and WGSL shaders of SHADER_DIR (examples/cpp/shaders), plus N permutations of the
// sky shader (N values of its EXPOSURE define), through spark_shader_cache_get_or_compile: the daemon compiles
// each once for every engine process on the machine; without a daemon the engine compiles them itself (naga,
// in process) and keeps them in its local cache. Every output must be valid SPIR-V, and the digest of all of
// them is printed: the test suite checks that every process, whichever tier answered it, got the same bytes.
// With --pause it stops after the first pass, waits for a line on stdin, then runs a second pass: the test
// suite kills the daemon in between to show the engine carrying on from its local cache.
//
// Output lines (checked by scripts/test.d/cpp.sh):
//   [NAME] daemon: connected pid=P | [NAME] daemon: not connected (...)
//   [NAME] pass K: shaders=S compiled=X cached=Y events=E digest=D
//   [NAME] summary: daemon_fresh=F daemon_hits=H local_cache=L local_compile=C

#include <sparkdaemon.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Job {
    std::string file;
    uint8_t language, stage;  // protocol bytes: GLSL 2, WGSL 1; vertex 1, fragment 2, compute 3
    std::vector<std::string> defines;
};

// The engine's shader set: every file once, and `permutations` exposure variants of the sky.
std::vector<Job> shader_jobs(uint32_t permutations) {
    std::vector<Job> jobs = {
        {"sky.vert", 2, 1, {}},
        {"sky.frag", 2, 2, {"EXPOSURE=1.5"}},
        {"particles.wgsl", 1, 3, {}},
        {"post.wgsl", 1, 2, {}},
    };
    for (uint32_t i = 0; i < permutations; ++i) {
        jobs.push_back({"sky.frag", 2, 2, {"EXPOSURE=" + std::to_string(2 + i) + ".25"}});
    }
    return jobs;
}

struct Tally {
    uint32_t fresh = 0, daemon_hits = 0, local_cache = 0, local_compile = 0;
};

// RAII over the C handle; closing it detaches the cache from the daemon connection.
class ShaderCache {
public:
    ShaderCache(const std::string& dir, bool use_daemon)
        : cache_(spark_shader_cache_open(dir.c_str(), use_daemon)) {}
    ~ShaderCache() { spark_shader_cache_close(cache_); }
    ShaderCache(const ShaderCache&) = delete;
    ShaderCache& operator=(const ShaderCache&) = delete;

    bool ok() const { return cache_ != nullptr; }

    // Compiles (or finds) one job; on success appends its SPIR-V to `digest` and counts where it came from.
    bool get_or_compile(const std::string& name, const std::string& shader_dir, const Job& j, uint64_t& digest,
                        Tally& tally) const;

private:
    SparkShaderCache* cache_;
};

std::string read_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return {};
    std::string s;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    return s;
}

// FNV-1a, continued over every output in job order.
void fnv1a(uint64_t& h, const uint8_t* data, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
}

bool ShaderCache::get_or_compile(const std::string& name, const std::string& shader_dir, const Job& j,
                                 uint64_t& digest, Tally& tally) const {
    const std::string source = read_file(shader_dir + "/" + j.file);
    std::vector<const char*> defines;
    for (const std::string& d : j.defines) defines.push_back(d.c_str());
    const char* include_dirs[] = {shader_dir.c_str()};
    SparkCompileDesc d{};
    d.language = j.language;
    d.stage = j.stage;
    d.target = 1;  // SPIR-V
    d.source = source.c_str();
    d.defines = defines.data();
    d.define_count = defines.size();
    d.include_dirs = include_dirs;
    d.include_dir_count = 1;
    SparkCompileResult r{};
    const SparkStatus st = spark_shader_cache_get_or_compile(cache_, &d, &r);
    const bool spirv = r.output.len >= 20 && r.output.len % 4 == 0 && r.output.data[0] == 0x03 &&
                       r.output.data[1] == 0x02 && r.output.data[2] == 0x23 && r.output.data[3] == 0x07;
    const bool ok = st == SPARK_STATUS_OK && r.status == 0 && spirv;
    if (!ok) {
        std::fprintf(stderr, "[%s] %s: status %d/%u: %s\n", name.c_str(), j.file.c_str(), st, r.status,
                     r.diagnostics ? r.diagnostics : spark_last_error());
    } else {
        fnv1a(digest, r.output.data, r.output.len);
        if (r.source == 0) (r.origin == 0 ? tally.fresh : tally.daemon_hits)++;
        if (r.source == 1) ++tally.local_cache;
        if (r.source == 2) ++tally.local_compile;
    }
    spark_compile_result_free(&r);
    return ok;
}

// Asset round trip through the daemon: three platform variants, one invalidation drops them all.
bool asset_demo(const std::string& name) {
    const std::string path = "textures/" + name + "/rock.png";
    for (uint8_t platform = 0; platform < 3; ++platform) {
        std::vector<uint8_t> variant(1000, platform);
        if (spark_asset_put(path.c_str(), platform, variant.data(), variant.size()) != SPARK_STATUS_OK) return false;
    }
    SparkBuffer buf{};
    if (spark_asset_get(path.c_str(), 2, &buf) != SPARK_STATUS_OK) return false;
    bool same = buf.len == 1000 && buf.data[999] == 2;
    spark_buffer_free(&buf);
    uint32_t dropped = 0;
    if (spark_asset_invalidate(path.c_str(), &dropped) != SPARK_STATUS_OK) return false;
    return same && dropped == 3 && spark_asset_get(path.c_str(), 2, &buf) == SPARK_STATUS_MISS;
}

// Once a frame: take every server event that has arrived, without waiting (timeout 0). The current daemon
// sends none, but an engine must drain them (EventsLost included) or the library's queue fills and drops.
// A payload larger than the buffer is not lost: the call says how big it is and keeps the event.
uint32_t drain_events() {
    std::vector<uint8_t> buf(256);
    uint32_t n = 0;
    for (;;) {
        uint16_t service = 0, type = 0;
        size_t len = 0;
        const SparkStatus st = spark_poll_event(0, &service, &type, buf.data(), buf.size(), &len);
        if (st == SPARK_STATUS_BUFFER_TOO_SMALL) {
            buf.resize(len);
            continue;
        }
        if (st != SPARK_STATUS_OK) return n;  // NO_EVENT, or no daemon: nothing more this frame
        ++n;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s NAME CACHE_DIR SHADER_DIR [--permutations N] [--pause]\n", argv[0]);
        return 64;
    }
    const std::string name = argv[1];
    const std::string dir = argv[2];
    const std::string shader_dir = argv[3];
    uint32_t permutations = 8;
    bool pause = false;
    for (int i = 4; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--permutations") && i + 1 < argc) {
            permutations = static_cast<uint32_t>(std::stoul(argv[++i]));
        } else if (!std::strcmp(argv[i], "--pause")) {
            pause = true;
        }
    }

    // Engine start-up: other systems first, then the daemon (settings from SPARK_DAEMON_*).
    if (spark_init_from_env() == SPARK_STATUS_OK) {
        SparkDaemonStats ds{};
        spark_stats(&ds);
        std::printf("[%s] daemon: connected pid=%u\n", name.c_str(), ds.daemon_pid);
        std::printf("[%s] assets: %s\n", name.c_str(), asset_demo(name) ? "ok" : "FAILED");
    } else {
        std::printf("[%s] daemon: not connected (%s)\n", name.c_str(), spark_last_error());
    }

    const std::vector<Job> jobs = shader_jobs(permutations);
    Tally total;
    {
        ShaderCache cache(dir, /*use_daemon=*/true);
        if (!cache.ok()) {
            std::fprintf(stderr, "[%s] cannot open shader cache: %s\n", name.c_str(), spark_last_error());
            return 1;
        }
        for (int pass = 1; pass <= (pause ? 2 : 1); ++pass) {
            if (pass == 2) {
                std::printf("[%s] paused\n", name.c_str());
                std::fflush(stdout);
                std::string line;
                std::getline(std::cin, line);
            }
            Tally t;
            uint64_t digest = 0xcbf29ce484222325ull;
            for (const Job& j : jobs) {
                if (!cache.get_or_compile(name, shader_dir, j, digest, t)) return 1;
            }
            std::printf("[%s] pass %d: shaders=%zu compiled=%u cached=%u events=%u digest=%016llx\n", name.c_str(),
                        pass, jobs.size(), t.fresh + t.local_compile, t.daemon_hits + t.local_cache,
                        drain_events(), static_cast<unsigned long long>(digest));
            total.fresh += t.fresh;
            total.daemon_hits += t.daemon_hits;
            total.local_cache += t.local_cache;
            total.local_compile += t.local_compile;
        }
    }  // the cache detaches here, before the connection shuts down

    spark_shutdown();
    spark_shutdown();  // idempotent
    std::printf("[%s] summary: daemon_fresh=%u daemon_hits=%u local_cache=%u local_compile=%u\n", name.c_str(),
                total.fresh, total.daemon_hits, total.local_cache, total.local_compile);
    return 0;
}
