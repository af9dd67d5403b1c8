package pagecipher

// EnvDisable is the environment variable that, set to "off", keeps
// libtomcrypt's own page cipher.
const EnvDisable = "EPOCHLOG_SQLCIPHER_AESNI"
