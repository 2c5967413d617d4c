// A toy C++17 "engine" using libsparkdaemon the way a real one would: settings from SPARK_DAEMON_* at start-up,
// a tiered shader cache (its own local directory, the shared daemon in front), shutdown in reverse order.
//
//   engine NAME CACHE_DIR [--shaders N] [--pause] [--real-shaders DIR]
//
// It "compiles" N shaders with a deterministic fake compiler, so an instance that gets a shader from a cache
// checks it is exactly what it would have compiled (bytecode, entry point, warnings, reflection). With
// --pause it stops after the first pass, waits for a line on stdin, then runs a second pass: the test suite
// kills the daemon in between to show the engine carrying on from its local cache.
//
// With --real-shaders it also compiles the GLSL and WGSL files in DIR (examples/cpp/shaders) through
// spark_shader_cache_get_or_compile: the daemon compiles each once for every engine process; without a
// daemon the engine compiles them itself (naga, in process) and keeps them in its local cache.
//
// Output lines (checked by scripts/test.d/cpp.sh):
//   [NAME] daemon: connected pid=P | [NAME] daemon: not connected (...)
//   [NAME] pass K: compiled=X cached=Y events=E
//   [NAME] real shaders: ok=N daemon_fresh=F daemon_hits=H local_cache=L local_compile=C
//   [NAME] summary: compiled=X verified=Y daemon_hits=A local_hits=B misses=C daemon_errors=D

#include <sparkdaemon.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr uint8_t kTargetVulkan = 1;

struct Shader {
    std::vector<uint8_t> bytecode;
    std::string entry_point;
    std::string errors;
    std::string warnings;
    SparkShaderReflection reflection{};

    bool operator==(const Shader& o) const {
        return bytecode == o.bytecode && entry_point == o.entry_point && errors == o.errors &&
               warnings == o.warnings && reflection.uniform_count == o.reflection.uniform_count &&
               reflection.texture_count == o.reflection.texture_count &&
               reflection.sampler_count == o.reflection.sampler_count &&
               reflection.storage_buffer_count == o.reflection.storage_buffer_count;
    }
};

// The same source always compiles to the same result.
Shader compile(const std::string& source, uint32_t i) {
    Shader s;
    for (size_t k = 0; k < 256 + i * 16; ++k) {
        s.bytecode.push_back(static_cast<uint8_t>((k * 131 + source.size() + i) & 0xff));
    }
    s.entry_point = "main_" + std::to_string(i);
    if (i % 2) s.warnings = "warning: implicit truncation in " + source;
    s.reflection = {i + 1, i % 4, i % 3, i % 2};
    return s;
}

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

// RAII over the C handle; closing it detaches the cache from the daemon connection.
class ShaderCache {
public:
    ShaderCache(const std::string& dir, bool use_daemon)
        : cache_(spark_shader_cache_open(dir.c_str(), use_daemon)) {}
    ~ShaderCache() { spark_shader_cache_close(cache_); }
    ShaderCache(const ShaderCache&) = delete;
    ShaderCache& operator=(const ShaderCache&) = delete;

    bool ok() const { return cache_ != nullptr; }

    std::optional<Shader> lookup(uint64_t hash, uint8_t target, uint8_t stage) const {
        SparkCompiledShader out{};
        if (spark_shader_cache_lookup(cache_, hash, target, stage, &out) != SPARK_STATUS_OK) {
            return std::nullopt;
        }
        Shader s;
        s.bytecode.assign(out.bytecode.data, out.bytecode.data + out.bytecode.len);
        s.entry_point = out.entry_point;
        s.errors = out.errors;
        s.warnings = out.warnings;
        s.reflection = out.reflection;
        spark_compiled_shader_free(&out);
        return s;
    }

    bool store(uint64_t hash, uint8_t target, uint8_t stage, const Shader& s) const {
        SparkShaderDesc d{};
        d.bytecode = s.bytecode.data();
        d.bytecode_len = s.bytecode.size();
        d.entry_point = s.entry_point.c_str();
        d.errors = s.errors.c_str();
        d.warnings = s.warnings.c_str();
        d.reflection = s.reflection;
        return spark_shader_cache_store(cache_, hash, target, stage, &d) == SPARK_STATUS_OK;
    }

    SparkShaderCacheStats stats() const {
        SparkShaderCacheStats st{};
        spark_shader_cache_stats(cache_, &st);
        return st;
    }

private:
    SparkShaderCache* cache_;
};

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

// Compiles the real shaders of `shader_dir` through the tiered cache; returns false on any failure.
bool real_shaders(const std::string& name, const std::string& cache_dir, const std::string& shader_dir) {
    struct Job {
        const char* file;
        uint8_t language, stage;  // protocol bytes: GLSL 2, WGSL 1; vertex 1, fragment 2, compute 3
        std::vector<const char*> defines;
    };
    const std::vector<Job> jobs = {
        {"sky.vert", 2, 1, {}},
        {"sky.frag", 2, 2, {"EXPOSURE=1.5"}},
        {"particles.wgsl", 1, 3, {}},
        {"post.wgsl", 1, 2, {}},
    };
    SparkShaderCache* cache = spark_shader_cache_open((cache_dir + "/compiled").c_str(), true);
    if (!cache) return false;
    const char* include_dirs[] = {shader_dir.c_str()};
    uint32_t ok = 0, fresh = 0, hits = 0, local_cache = 0, local_compile = 0;
    for (const Job& j : jobs) {
        const std::string source = read_file(shader_dir + "/" + j.file);
        SparkCompileDesc d{};
        d.language = j.language;
        d.stage = j.stage;
        d.target = 1;  // SPIR-V
        d.source = source.c_str();
        d.defines = j.defines.data();
        d.define_count = j.defines.size();
        d.include_dirs = include_dirs;
        d.include_dir_count = 1;
        SparkCompileResult r{};
        const SparkStatus st = spark_shader_cache_get_or_compile(cache, &d, &r);
        const bool spirv = r.output.len >= 4 && r.output.data[0] == 0x03 && r.output.data[1] == 0x02 &&
                           r.output.data[2] == 0x23 && r.output.data[3] == 0x07;
        if (st != SPARK_STATUS_OK || r.status != 0 || !spirv) {
            std::fprintf(stderr, "[%s] %s: status %d/%u: %s\n", name.c_str(), j.file, st, r.status,
                         r.diagnostics ? r.diagnostics : spark_last_error());
        } else {
            ++ok;
            if (r.source == 0) (r.origin == 0 ? fresh : hits)++;
            if (r.source == 1) ++local_cache;
            if (r.source == 2) ++local_compile;
        }
        spark_compile_result_free(&r);
    }
    spark_shader_cache_close(cache);
    std::printf("[%s] real shaders: ok=%u daemon_fresh=%u daemon_hits=%u local_cache=%u local_compile=%u\n",
                name.c_str(), ok, fresh, hits, local_cache, local_compile);
    return ok == jobs.size();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s NAME CACHE_DIR [--shaders N] [--pause]\n", argv[0]);
        return 64;
    }
    const std::string name = argv[1];
    const std::string dir = argv[2];
    uint32_t count = 8;
    bool pause = false;
    std::string shader_dir;
    for (int i = 3; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--shaders") && i + 1 < argc) {
            count = static_cast<uint32_t>(std::stoul(argv[++i]));
        } else if (!std::strcmp(argv[i], "--pause")) {
            pause = true;
        } else if (!std::strcmp(argv[i], "--real-shaders") && i + 1 < argc) {
            shader_dir = argv[++i];
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

    uint32_t compiled_total = 0;
    uint32_t verified = 0;
    SparkShaderCacheStats st{};
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
            uint32_t compiled = 0;
            uint32_t cached = 0;
            for (uint32_t i = 0; i < count; ++i) {
                const std::string source = "shaders/material_" + std::to_string(i) + ".hlsl";
                const uint64_t hash = fnv1a(source);
                const uint8_t stage = static_cast<uint8_t>(i % 3);
                const Shader expected = compile(source, i);
                if (auto hit = cache.lookup(hash, kTargetVulkan, stage)) {
                    if (!(*hit == expected)) {
                        std::fprintf(stderr, "[%s] shader %u from the cache differs from its compile\n", name.c_str(), i);
                        return 1;
                    }
                    ++cached;
                    ++verified;
                } else {
                    if (!cache.store(hash, kTargetVulkan, stage, expected)) {
                        std::fprintf(stderr, "[%s] store failed: %s\n", name.c_str(), spark_last_error());
                        return 1;
                    }
                    ++compiled;
                }
            }
            compiled_total += compiled;
            std::printf("[%s] pass %d: compiled=%u cached=%u events=%u\n", name.c_str(), pass, compiled, cached,
                        drain_events());
        }
        st = cache.stats();
    }  // the cache detaches here, before the connection shuts down
    if (!shader_dir.empty() && !real_shaders(name, dir, shader_dir)) return 1;

    spark_shutdown();
    spark_shutdown();  // idempotent
    std::printf("[%s] summary: compiled=%u verified=%u daemon_hits=%llu local_hits=%llu misses=%llu daemon_errors=%llu\n",
                name.c_str(), compiled_total, verified, static_cast<unsigned long long>(st.daemon_hits),
                static_cast<unsigned long long>(st.local_hits), static_cast<unsigned long long>(st.misses),
                static_cast<unsigned long long>(st.daemon_errors));
    return 0;
}
