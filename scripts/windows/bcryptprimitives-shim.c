/* Test-environment shim for Wine 8.0 (Debian 12), which has no bcryptprimitives.dll: Rust's std (1.78 and
 * later) imports ProcessPrng from it for HashMap seeds and random numbers, so every Rust .exe fails to load
 * under that Wine with c0000135. Windows 10 and later ship the real DLL; this file is never part of a
 * release. scripts/test.d/windows.sh builds it with MinGW and puts it next to the test executables only when
 * the installed Wine lacks the DLL, and says so. ProcessPrng forwards to advapi32's RtlGenRandom
 * (SystemFunction036), which Wine implements. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
