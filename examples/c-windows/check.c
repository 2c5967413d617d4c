/* The C ABI on Windows: built with MinGW against sparkdaemon.dll (import library libsparkdaemon.dll.a) and
 * run under Wine by scripts/test.d/windows.sh.
 *
 *   check.exe PIPE SPARKD_EXE CACHE_ROOT
 *
 * Auto-spawns sparkd on PIPE through spark_init (with --idle-timeout 2, so the daemon leaves by itself once
 * this program has disconnected), then ping, stats, shader put/get/exists/miss, asset put/get/invalidate
 * and a 6 MiB (streamed) asset. Prints one PASS/FAIL line per step and exits 1 if any failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparkdaemon.h"

static int failures = 0;

static void check(int ok, const char *what) {
    if (ok) {
        printf("PASS c-abi %s\n", what);
    } else {
        const char *e = spark_last_error();
        printf("FAIL c-abi %s (last error: %s)\n", what, e ? e : "none");
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: check PIPE SPARKD_EXE CACHE_ROOT\n");
        return 64;
    }
    char args[1024];
    snprintf(args, sizeof args, "--cache-root %s --idle-timeout 2", argv[3]);

    SparkConfig cfg;
    check(spark_config_default(&cfg) == SPARK_STATUS_OK, "config defaults");
    cfg.enabled = true;
    cfg.socket_path = argv[1];
    cfg.auto_spawn = true;
    cfg.daemon_bin = argv[2];
    cfg.daemon_args = args;
    cfg.spawn_timeout_ms = 60000; /* a bound for a cold Wine start, not a measurement */
    cfg.client_name = "c-abi-check";
    check(spark_init(&cfg) == SPARK_STATUS_OK, "spark_init auto-spawns the daemon");
    check(spark_is_connected(), "connected");

    uint64_t rtt = 0;
    check(spark_ping(&rtt) == SPARK_STATUS_OK, "ping");
    SparkDaemonStats st;
    memset(&st, 0, sizeof st);
    check(spark_stats(&st) == SPARK_STATUS_OK && st.protocol_version == 1 && st.daemon_pid != 0,
          "stats (protocol 1, daemon pid known)");

    SparkBuffer buf = {0};
    check(spark_shader_get(42, 1, 2, &buf) == SPARK_STATUS_MISS, "shader miss before put");
    const char *spirv = "\x03\x02\x23\x07 spirv";
    check(spark_shader_put(42, 1, 2, (const uint8_t *)spirv, strlen(spirv)) == SPARK_STATUS_OK, "shader put");
    check(spark_shader_get(42, 1, 2, &buf) == SPARK_STATUS_OK && buf.len == strlen(spirv) &&
              memcmp(buf.data, spirv, buf.len) == 0,
          "shader get returns the bytes put");
    spark_buffer_free(&buf);
    uint64_t size = 0;
    check(spark_shader_exists(42, 1, 2, &size) == SPARK_STATUS_OK && size == strlen(spirv), "shader exists");

    size_t big_len = 6u << 20;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++) big[i] = (uint8_t)(i * 7 + 1);
    check(spark_asset_put("tex/big.dds", 1, big, big_len) == SPARK_STATUS_OK, "asset put 6 MiB (streamed)");
    check(spark_asset_put("tex/big.dds", 2, (const uint8_t *)"x", 1) == SPARK_STATUS_OK, "asset put variant 2");
    check(spark_asset_get("tex/big.dds", 1, &buf) == SPARK_STATUS_OK && buf.len == big_len &&
              memcmp(buf.data, big, big_len) == 0,
          "asset get returns 6 MiB byte for byte");
    spark_buffer_free(&buf);
    free(big);
    uint32_t dropped = 0;
    check(spark_asset_invalidate("tex/big.dds", &dropped) == SPARK_STATUS_OK && dropped == 2,
          "asset invalidate drops both variants");
    check(spark_asset_get("tex/big.dds", 1, &buf) == SPARK_STATUS_MISS, "asset gone after invalidate");

    spark_shutdown();
    check(!spark_is_connected(), "disconnected after spark_shutdown");
    if (failures) {
        printf("c-abi check: %d FAILED\n", failures);
        return 1;
    }
    printf("c-abi check: every step passed\n");
    return 0;
}
