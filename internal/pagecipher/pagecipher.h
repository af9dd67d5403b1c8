// The C side of package pagecipher.

#ifndef EPOCHLOG_PAGECIPHER_H
#define EPOCHLOG_PAGECIPHER_H

// epochlog_aesni_supported reports whether this CPU has the AES
// instructions (and this build the code that uses them).
int epochlog_aesni_supported(void);

// epochlog_aesni_cbc encrypts (encrypt != 0) or decrypts in_sz bytes (a
// multiple of 16) with AES-256-CBC under a 32-byte key and a 16-byte IV,
// without padding, into out (which may be in). It returns 0, or -1 for a
// key or length it does not take (or no AES instructions in this build).
int epochlog_aesni_cbc(int encrypt, const unsigned char *key, int key_sz, const unsigned char *iv,
		       const unsigned char *in, int in_sz, unsigned char *out);

// epochlog_pagecipher_install makes SQLCipher's provider use
// epochlog_aesni_cbc for pages, see the constants below for its result.
int epochlog_pagecipher_install(void);

// epochlog_pagecipher_use switches the installed provider between the AES
// instructions (aesni != 0) and libtomcrypt's own cipher, for the
// databases opened afterwards. Tests and benchmarks only.
void epochlog_pagecipher_use(int aesni);

// epochlog_pagecipher_ltc runs libtomcrypt's own cipher, as SQLCipher
// would without this package. Tests only; -1 before an install.
int epochlog_pagecipher_ltc(int encrypt, unsigned char *key, int key_sz, unsigned char *iv,
			    unsigned char *in, int in_sz, unsigned char *out);

// epochlog_pagecipher_hmac runs the provider's HMAC-SHA512 over in, then
// in2 (SQLCipher authenticates a page and its number so), into out (64
// bytes), as SQLCipher does for every page it writes or reads.
// Benchmarks only; -1 before an install.
int epochlog_pagecipher_hmac(unsigned char *key, int key_sz, unsigned char *in, int in_sz, unsigned char *in2,
			     int in2_sz, unsigned char *out);

#define EPOCHLOG_PAGECIPHER_INSTALLED 0
#define EPOCHLOG_PAGECIPHER_NO_AESNI 1
#define EPOCHLOG_PAGECIPHER_UNKNOWN_PROVIDER 2
#define EPOCHLOG_PAGECIPHER_NO_PROVIDER 3

#endif
