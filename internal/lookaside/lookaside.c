// The C side of package lookaside.

// Defined, with external linkage, in go-sqlcipher's sqlite3.c.
extern int sqlite3_config(int op, ...);

#define SQLITE_CONFIG_LOOKASIDE 13 // sqlite3.h

int epochlog_lookaside_configure(int slot_size, int slots) {
	// Refused (SQLITE_MISUSE) once SQLite is initialised: it applies to
	// the connections opened afterwards, so it must come first.
	return sqlite3_config(SQLITE_CONFIG_LOOKASIDE, slot_size, slots);
}
