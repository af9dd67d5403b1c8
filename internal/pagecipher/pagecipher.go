// Package pagecipher makes SQLCipher encrypt and decrypt its pages with
// the CPU's AES instructions.
//
// go-sqlcipher builds SQLCipher with libtomcrypt, whose AES is portable C
// with lookup tables: on the read model's write path it was the largest
// single cost (a commit of a group of 1,000 writes about 160 pages of 4
// KiB, each encrypted with AES-256-CBC and authenticated with
// HMAC-SHA512), and table-driven AES leaks key bits through cache timing.
// On x86-64 CPUs with AES-NI this package replaces the cipher function of
// SQLCipher's provider with one using the AES instructions (constant
// time, several times faster). Everything else stays libtomcrypt's: the
// HMAC, the key derivation, the random numbers. The pages are the same
// bytes: AES-256-CBC is AES-256-CBC, checked against the FIPS 197 and SP
// 800-38A vectors and against libtomcrypt itself, and databases move
// between the two both ways.
//
// It is installed when the package is initialised, for every database
// the process opens afterwards (the projections package imports it).
// Elsewhere (no AES-NI, another architecture, or a provider other than
// the expected libtomcrypt) nothing changes and [Active] says why.
// Setting EPOCHLOG_SQLCIPHER_AESNI=off in the environment keeps
// libtomcrypt's cipher.
//go:build cgo

package pagecipher

/*
#include "pagecipher.h"
*/
import "C"

import (
	"os"

	// The SQLCipher this package changes; its C symbols are linked with it.
	_ "github.com/mutecomm/go-sqlcipher/v4"

	// Configures SQLite's lookaside, which it must do before install
	// initialises SQLite: imported, its init runs before this package's.
	_ "github.com/epochlog/epochlog/internal/lookaside"
)

var status = install()

func install() string {
	if os.Getenv(EnvDisable) == "off" {
		return "libtomcrypt (" + EnvDisable + "=off)"
	}
	switch C.epochlog_pagecipher_install() {
	case C.EPOCHLOG_PAGECIPHER_INSTALLED:
		return ""
	case C.EPOCHLOG_PAGECIPHER_NO_AESNI:
		return "libtomcrypt (no AES instructions on this CPU or architecture)"
	case C.EPOCHLOG_PAGECIPHER_UNKNOWN_PROVIDER:
		return "libtomcrypt? (SQLCipher's crypto provider is not the libtomcrypt AES-256-CBC this package expects)"
	default:
		return "libtomcrypt (SQLCipher's crypto provider could not be set up)"
	}
}

// Active reports whether SQLCipher's pages are encrypted with the AES
// instructions, and if not, what encrypts them and why.
func Active() (bool, string) {
	if status == "" {
		return true, "AES-NI (AES-256-CBC), libtomcrypt HMAC-SHA512"
	}
	return false, status
}
