/* Test-only: Wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's std imports for
 * random numbers. This stand-in, placed next to the .exe under test, answers it with
 * advapi32's RtlGenRandom (SystemFunction036), which Wine has. Never shipped: real Windows
 * (10 and later) has the real DLL. Built by windows/test-under-wine.sh. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
