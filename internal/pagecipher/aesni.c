// AES-256-CBC with the x86-64 AES instructions, for SQLCipher's page
// cipher. See pagecipher.go for why and how it is installed.

#include "pagecipher.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <string.h>
#include <wmmintrin.h>
#include <emmintrin.h>

#define AESNI __attribute__((target("aes,sse2")))

// Explicit wipe of a key schedule: a plain memset of a dead buffer may be
// optimised away.
static void wipe(void *p, size_t n) {
	volatile unsigned char *v = (volatile unsigned char *)p;
	while (n--) *v++ = 0;
}

// The AES-256 key expansion of Intel's AES-NI white paper (Gueron,
// "Intel Advanced Encryption Standard (AES) New Instructions Set",
// section 5.4): round keys 0..14.

// prefix_xor returns the running XOR of t's 32-bit words (w0, w0^w1,
// w0^w1^w2, w0^w1^w2^w3): each word of a round key is the previous word
// XOR the same word of the round key two before.
AESNI static __m128i prefix_xor(__m128i t) {
	t = _mm_xor_si128(t, _mm_slli_si128(t, 4));
	return _mm_xor_si128(t, _mm_slli_si128(t, 8));
}

// expand_a derives an even round key from the one two before (t1) and
// aeskeygenassist of the previous one (t2: RotWord, SubWord and Rcon).
AESNI static __m128i expand_a(__m128i t1, __m128i t2) {
	return _mm_xor_si128(prefix_xor(t1), _mm_shuffle_epi32(t2, 0xff));
}

// expand_b derives an odd round key from the one two before (t3) and the
// previous one (t1), through SubWord alone.
AESNI static __m128i expand_b(__m128i t1, __m128i t3) {
	return _mm_xor_si128(prefix_xor(t3), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t1, 0x00), 0xaa));
}

#define EXPAND_PAIR(i, rcon)                                            \
	do {                                                            \
		t1 = expand_a(t1, _mm_aeskeygenassist_si128(t3, rcon)); \
		ks[i] = t1;                                             \
		t3 = expand_b(t1, t3);                                  \
		ks[i + 1] = t3;                                         \
	} while (0)

AESNI static void expand_key(const unsigned char *key, __m128i ks[15]) {
	__m128i t1 = _mm_loadu_si128((const __m128i *)key);
	__m128i t3 = _mm_loadu_si128((const __m128i *)(key + 16));
	ks[0] = t1;
	ks[1] = t3;
	EXPAND_PAIR(2, 0x01);
	EXPAND_PAIR(4, 0x02);
	EXPAND_PAIR(6, 0x04);
	EXPAND_PAIR(8, 0x08);
	EXPAND_PAIR(10, 0x10);
	EXPAND_PAIR(12, 0x20);
	ks[14] = expand_a(t1, _mm_aeskeygenassist_si128(t3, 0x40));
}

// Encryption is one chain of AES rounds (each block's input is the last
// block's output). The aesni_ prefix keeps these apart from
// libtomcrypt's cbc_encrypt and cbc_decrypt in profiles.
AESNI static void aesni_cbc_encrypt(const __m128i ks[15], const unsigned char *iv, const unsigned char *in, int n, unsigned char *out) {
	__m128i x = _mm_loadu_si128((const __m128i *)iv);
	for (int off = 0; off < n; off += 16) {
		x = _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)(in + off)));
		x = _mm_xor_si128(x, ks[0]);
		for (int r = 1; r < 14; r++) x = _mm_aesenc_si128(x, ks[r]);
		x = _mm_aesenclast_si128(x, ks[14]);
		_mm_storeu_si128((__m128i *)(out + off), x);
	}
}

// Decryption has no chain between blocks' AES, so four run interleaved
// (the instructions' latency is hidden by the others'). Each block's
// ciphertext is read before its plaintext is stored: in may equal out.
AESNI static void aesni_cbc_decrypt(const __m128i ks[15], const unsigned char *iv, const unsigned char *in, int n, unsigned char *out) {
	__m128i dk[15];
	dk[0] = ks[14];
	for (int r = 1; r < 14; r++) dk[r] = _mm_aesimc_si128(ks[14 - r]);
	dk[14] = ks[0];

	__m128i prev = _mm_loadu_si128((const __m128i *)iv);
	int off = 0;
	for (; off + 64 <= n; off += 64) {
		__m128i c0 = _mm_loadu_si128((const __m128i *)(in + off));
		__m128i c1 = _mm_loadu_si128((const __m128i *)(in + off + 16));
		__m128i c2 = _mm_loadu_si128((const __m128i *)(in + off + 32));
		__m128i c3 = _mm_loadu_si128((const __m128i *)(in + off + 48));
		__m128i x0 = _mm_xor_si128(c0, dk[0]);
		__m128i x1 = _mm_xor_si128(c1, dk[0]);
		__m128i x2 = _mm_xor_si128(c2, dk[0]);
		__m128i x3 = _mm_xor_si128(c3, dk[0]);
		for (int r = 1; r < 14; r++) {
			x0 = _mm_aesdec_si128(x0, dk[r]);
			x1 = _mm_aesdec_si128(x1, dk[r]);
			x2 = _mm_aesdec_si128(x2, dk[r]);
			x3 = _mm_aesdec_si128(x3, dk[r]);
		}
		x0 = _mm_xor_si128(_mm_aesdeclast_si128(x0, dk[14]), prev);
		x1 = _mm_xor_si128(_mm_aesdeclast_si128(x1, dk[14]), c0);
		x2 = _mm_xor_si128(_mm_aesdeclast_si128(x2, dk[14]), c1);
		x3 = _mm_xor_si128(_mm_aesdeclast_si128(x3, dk[14]), c2);
		_mm_storeu_si128((__m128i *)(out + off), x0);
		_mm_storeu_si128((__m128i *)(out + off + 16), x1);
		_mm_storeu_si128((__m128i *)(out + off + 32), x2);
		_mm_storeu_si128((__m128i *)(out + off + 48), x3);
		prev = c3;
	}
	for (; off < n; off += 16) {
		__m128i c = _mm_loadu_si128((const __m128i *)(in + off));
		__m128i x = _mm_xor_si128(c, dk[0]);
		for (int r = 1; r < 14; r++) x = _mm_aesdec_si128(x, dk[r]);
		x = _mm_xor_si128(_mm_aesdeclast_si128(x, dk[14]), prev);
		_mm_storeu_si128((__m128i *)(out + off), x);
		prev = c;
	}
	wipe(dk, sizeof dk);
}

int epochlog_aesni_supported(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse2");
}

int epochlog_aesni_cbc(int encrypt, const unsigned char *key, int key_sz, const unsigned char *iv,
		       const unsigned char *in, int in_sz, unsigned char *out) {
	if (key_sz != 32 || in_sz < 0 || in_sz % 16 != 0) return -1;
	__m128i ks[15];
	expand_key(key, ks);
	if (encrypt) {
		aesni_cbc_encrypt(ks, iv, in, in_sz, out);
	} else {
		aesni_cbc_decrypt(ks, iv, in, in_sz, out);
	}
	wipe(ks, sizeof ks);
	return 0;
}

#else

int epochlog_aesni_supported(void) { return 0; }

int epochlog_aesni_cbc(int encrypt, const unsigned char *key, int key_sz, const unsigned char *iv,
		       const unsigned char *in, int in_sz, unsigned char *out) {
	return -1;
}

#endif
