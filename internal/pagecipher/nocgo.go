//go:build !cgo

package pagecipher

// Active reports that nothing was installed: without cgo there is no
// SQLCipher (go-sqlcipher needs cgo) and so no page cipher.
func Active() (bool, string) {
	return false, "none (built without cgo: no SQLCipher)"
}
