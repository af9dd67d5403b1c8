//go:build cgo

package pagecipher

/*
#include "pagecipher.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// The hooks the package's tests and benchmarks use (cgo cannot be used in
// a _test.go file).

var errCipher = errors.New("pagecipher: cipher refused the input")

// aesniCBC runs the AES instructions' AES-256-CBC over in.
func aesniCBC(encrypt bool, key, iv, in []byte) ([]byte, error) {
	return cbc(encrypt, key, iv, in, false)
}

// ltcCBC runs libtomcrypt's AES-256-CBC, as SQLCipher's provider does.
func ltcCBC(encrypt bool, key, iv, in []byte) ([]byte, error) {
	return cbc(encrypt, key, iv, in, true)
}

func cbc(encrypt bool, key, iv, in []byte, ltc bool) ([]byte, error) {
	if len(key) == 0 || len(iv) != 16 || len(in) == 0 {
		return nil, errCipher
	}
	out := make([]byte, len(in))
	// Go memory passed to C for the call only (cgo's rules allow it: the
	// C side keeps no pointer).
	ck, civ := (*C.uchar)(unsafe.Pointer(&key[0])), (*C.uchar)(unsafe.Pointer(&iv[0]))
	cin, cout := (*C.uchar)(unsafe.Pointer(&in[0])), (*C.uchar)(unsafe.Pointer(&out[0]))
	e := C.int(0)
	if encrypt {
		e = 1
	}
	var rc C.int
	if ltc {
		rc = C.epochlog_pagecipher_ltc(e, ck, C.int(len(key)), civ, cin, C.int(len(in)), cout)
	} else {
		rc = C.epochlog_aesni_cbc(e, ck, C.int(len(key)), civ, cin, C.int(len(in)), cout)
	}
	if rc != 0 {
		return nil, errCipher
	}
	return out, nil
}

// providerHMAC runs SQLCipher's provider's HMAC-SHA512 over in and then
// in2, as it authenticates a page.
func providerHMAC(key, in, in2 []byte) ([]byte, error) {
	if len(key) == 0 || len(in) == 0 || len(in2) == 0 {
		return nil, errCipher
	}
	out := make([]byte, 64)
	rc := C.epochlog_pagecipher_hmac((*C.uchar)(unsafe.Pointer(&key[0])), C.int(len(key)),
		(*C.uchar)(unsafe.Pointer(&in[0])), C.int(len(in)), (*C.uchar)(unsafe.Pointer(&in2[0])), C.int(len(in2)),
		(*C.uchar)(unsafe.Pointer(&out[0])))
	if rc != 0 {
		return nil, errCipher
	}
	return out, nil
}

// useAESNI switches the installed provider for the databases opened
// afterwards; not safe while another goroutine opens one.
func useAESNI(on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	C.epochlog_pagecipher_use(v)
}

// aesniSupported reports whether this CPU (and build) has the AES
// instructions, whether or not they were installed.
func aesniSupported() bool { return C.epochlog_aesni_supported() != 0 }
