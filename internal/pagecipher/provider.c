// Installs the AES instructions into SQLCipher's crypto provider. See
// pagecipher.go.

#include <string.h>
#include "pagecipher.h"

// sqlcipher_provider as SQLCipher 4 declares it (crypto.h, in the
// amalgamation of github.com/mutecomm/go-sqlcipher/v4); the install checks
// the provider it finds before changing it.
typedef struct {
	int (*activate)(void *ctx);
	int (*deactivate)(void *ctx);
	const char *(*get_provider_name)(void *ctx);
	int (*add_random)(void *ctx, void *buffer, int length);
	int (*random)(void *ctx, void *buffer, int length);
	int (*hmac)(void *ctx, int algorithm, unsigned char *hmac_key, int key_sz, unsigned char *in, int in_sz,
		    unsigned char *in2, int in2_sz, unsigned char *out);
	int (*kdf)(void *ctx, int algorithm, const unsigned char *pass, int pass_sz, unsigned char *salt, int salt_sz,
		   int workfactor, int key_sz, unsigned char *key);
	int (*cipher)(void *ctx, int mode, unsigned char *key, int key_sz, unsigned char *iv, unsigned char *in, int in_sz,
		      unsigned char *out);
	const char *(*get_cipher)(void *ctx);
	int (*get_key_sz)(void *ctx);
	int (*get_iv_sz)(void *ctx);
	int (*get_block_sz)(void *ctx);
	int (*get_hmac_sz)(void *ctx, int algorithm);
	int (*ctx_init)(void **ctx);
	int (*ctx_free)(void **ctx);
	int (*fips_status)(void *ctx);
	const char *(*get_provider_version)(void *ctx);
} sqlcipher_provider;

// Defined, with external linkage, in go-sqlcipher's sqlite3.c.
extern int sqlite3_initialize(void);
extern void sqlcipher_activate(void);
extern sqlcipher_provider *sqlcipher_get_provider(void);

#define CIPHER_ENCRYPT 1 // SQLCipher's mode for encryption (else decryption)

static sqlcipher_provider *provider;
static int (*ltc_cipher)(void *ctx, int mode, unsigned char *key, int key_sz, unsigned char *iv, unsigned char *in,
			 int in_sz, unsigned char *out);

static int page_cipher(void *ctx, int mode, unsigned char *key, int key_sz, unsigned char *iv, unsigned char *in,
		       int in_sz, unsigned char *out) {
	if (epochlog_aesni_cbc(mode == CIPHER_ENCRYPT, key, key_sz, iv, in, in_sz, out) == 0) return 0; // SQLITE_OK
	// A key size or length the AES instructions' path does not take
	// (SQLCipher 4 pages never are): libtomcrypt's answer, as before.
	return ltc_cipher(ctx, mode, key, key_sz, iv, in, in_sz, out);
}

int epochlog_pagecipher_install(void) {
	if (!epochlog_aesni_supported()) return EPOCHLOG_PAGECIPHER_NO_AESNI;
	if (sqlite3_initialize() != 0) return EPOCHLOG_PAGECIPHER_NO_PROVIDER;
	// SQLCipher registers its provider on the first activation and frees
	// it when the last database closes (to register a fresh one on the
	// next): one activation held for the life of the process keeps the
	// provider, and so this change, for every database the process opens.
	sqlcipher_activate();
	sqlcipher_provider *p = sqlcipher_get_provider();
	if (p == NULL) return EPOCHLOG_PAGECIPHER_NO_PROVIDER;
	if (p->get_provider_name == NULL || strcmp(p->get_provider_name(NULL), "libtomcrypt") != 0 ||
	    p->get_cipher == NULL || strcmp(p->get_cipher(NULL), "aes-256-cbc") != 0 || p->cipher == NULL)
		return EPOCHLOG_PAGECIPHER_UNKNOWN_PROVIDER;
	provider = p;
	ltc_cipher = p->cipher;
	p->cipher = page_cipher;
	return EPOCHLOG_PAGECIPHER_INSTALLED;
}

void epochlog_pagecipher_use(int aesni) {
	if (provider == NULL) return;
	provider->cipher = aesni ? page_cipher : ltc_cipher;
}

int epochlog_pagecipher_ltc(int encrypt, unsigned char *key, int key_sz, unsigned char *iv, unsigned char *in,
			    int in_sz, unsigned char *out) {
	if (ltc_cipher == NULL) return -1;
	// libtomcrypt finds its cipher in a table its context registers.
	void *ctx = NULL;
	if (provider->ctx_init(&ctx) != 0) return -1;
	int rc = ltc_cipher(ctx, encrypt ? CIPHER_ENCRYPT : 0, key, key_sz, iv, in, in_sz, out);
	provider->ctx_free(&ctx);
	return rc;
}

#define SQLCIPHER_HMAC_SHA512 2 // SQLCipher 4's algorithm number (crypto.h)

int epochlog_pagecipher_hmac(unsigned char *key, int key_sz, unsigned char *in, int in_sz, unsigned char *in2,
			     int in2_sz, unsigned char *out) {
	if (provider == NULL || provider->hmac == NULL) return -1;
	// One context for every call, as a database keeps its own: its setup
	// is not the HMAC's cost. Single-threaded callers only.
	static void *ctx = NULL;
	if (ctx == NULL && provider->ctx_init(&ctx) != 0) return -1;
	return provider->hmac(ctx, SQLCIPHER_HMAC_SHA512, key, key_sz, in, in_sz, in2, in2_sz, out);
}
