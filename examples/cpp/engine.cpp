// A toy C++17 "engine" using libsparkdaemon the way a real one would: settings from SPARK_DAEMON_* at start-up,
// a tiered shader cache (its own local directory, the shared daemon in front), shutdown in reverse order.
//
//   engine NAME CACHE_DIR [--shaders N] [--pause]
//
// It "compiles" N shaders with a deterministic fake compiler, so an instance that gets a shader from a cache
// checks it is exactly what it would have compiled (bytecode, entry point, warnings, reflection). With
// --pause it stops after the first pass, waits for a line on stdin, then runs a second pass: the test suite
// kills the daemon in between to show the engine carrying on from its local cache.
//
// Output lines (checked by scripts/test.d/cpp.sh):
//   [NAME] daemon: connected pid=P | [NAME] daemon: not connected (...)
//   [NAME] pass K: compiled=X cached=Y events=E
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
    for (int i = 3; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--shaders") && i + 1 < argc) {
            count = static_cast<uint32_t>(std::stoul(argv[++i]));
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

    spark_shutdown();
    spark_shutdown();  // idempotent
    std::printf("[%s] summary: compiled=%u verified=%u daemon_hits=%llu local_hits=%llu misses=%llu daemon_errors=%llu\n",
                name.c_str(), compiled_total, verified, static_cast<unsigned long long>(st.daemon_hits),
                static_cast<unsigned long long>(st.local_hits), static_cast<unsigned long long>(st.misses),
                static_cast<unsigned long long>(st.daemon_errors));
    return 0;
}
