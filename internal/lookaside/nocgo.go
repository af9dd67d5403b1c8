//go:build !cgo

package lookaside

// Configured reports that nothing was configured: without cgo there is no
// SQLCipher (go-sqlcipher needs cgo).
func Configured() (bool, string) {
	return false, "none (built without cgo: no SQLCipher)"
}
