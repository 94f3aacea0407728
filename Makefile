# rootlesskit (Rust): build, install and package.
#
#   make                              release binaries, man pages, completions, licence inventory
#   make install [PREFIX=/usr/local] [DESTDIR=]
#   make deb                          split Debian packages in target/debian/
#   make licences                     licence inventory; fails on a licence not in packaging/licences.allow
#   make uninstall [PREFIX=…] [DESTDIR=]
#
# PROFILE=debug installs the debug build instead (quick, for tests).
# NO_BUILD=1 installs what is already built (binaries in BUILD_DIR, pages,
# completions and licence inventory in GEN_DIR) without running cargo, e.g.
# `make` as yourself, then `sudo make install NO_BUILD=1`.
# `make install` writes only below $(DESTDIR)$(PREFIX): it needs root only
# when that is not writable by the caller.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/rootlesskit-rs
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d

CARGO ?= cargo
CARGO_FLAGS ?= --locked
PROFILE ?= release
INSTALL ?= install

TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
ifeq ($(PROFILE),debug)
PROFILE_FLAG := --profile dev
else
PROFILE_FLAG := --profile $(PROFILE)
endif
BUILD_DIR ?= $(TARGET_DIR)/$(PROFILE)
GEN_DIR ?= $(TARGET_DIR)/rk-generated
DEB_DIR ?= $(TARGET_DIR)/debian

# The drivers the workspace builds (packaging/drivers: one a line).
DRIVERS := $(shell awk -F: '!/^\#/ && NF >= 3 { print $$2 }' packaging/drivers)
PROGRAMS := rootlesskit rootlessctl
# Helpers of the core that it starts itself (not network drivers): the
# builtin port driver's relay. In the core's package, in libexec.
HELPERS := rootlesskit-port-builtin
# The build-time tool, always a quick debug build (not installed).
DOCGEN := $(TARGET_DIR)/debug/rootlesskit-docgen

DOCS := README.md $(wildcard docs/*.md)

# The date in the man pages: the last commit's, for reproducible output.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
export SOURCE_DATE_EPOCH

ifeq ($(NO_BUILD),)
BUILT := all
CARGO_BUILT := build
DOCGEN_BUILT := $(DOCGEN)
endif

.PHONY: all build docs man completions licences install install-core install-drivers uninstall deb clean

all: $(CARGO_BUILT) docs licences

build:
	$(CARGO) build $(CARGO_FLAGS) $(PROFILE_FLAG) -p rootlesskit-core -p rootlessctl -p rk-ports $(addprefix -p ,$(DRIVERS))

$(DOCGEN): FORCE
	$(CARGO) build $(CARGO_FLAGS) -q -p rk-docgen

docs: man completions

man: $(CARGO_BUILT) $(DOCGEN_BUILT)
	$(DOCGEN) man --out $(GEN_DIR)/man --protocol docs/driver-protocol.md

completions: $(CARGO_BUILT) $(DOCGEN_BUILT)
	$(DOCGEN) completions --out $(GEN_DIR)/completions

licences: $(DOCGEN_BUILT)
	@mkdir -p $(GEN_DIR)
	$(DOCGEN) licences --allow packaging/licences.allow --inventory $(GEN_DIR)/licences.txt

install: install-core install-drivers

install-core: $(BUILT)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(INSTALL) -m 0755 $(addprefix $(BUILD_DIR)/,$(PROGRAMS)) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -d $(DESTDIR)$(LIBEXECDIR)/rootlesskit
	$(INSTALL) -m 0755 $(addprefix $(BUILD_DIR)/,$(HELPERS)) $(DESTDIR)$(LIBEXECDIR)/rootlesskit/
	$(INSTALL) -m 0644 $(GEN_DIR)/man/man1/rootlesskit.1 $(GEN_DIR)/man/man1/rootlessctl.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 0644 $(GEN_DIR)/man/man7/*.7 $(DESTDIR)$(MANDIR)/man7/
	$(INSTALL) -m 0644 $(GEN_DIR)/completions/bash/rootlesskit $(GEN_DIR)/completions/bash/rootlessctl $(DESTDIR)$(BASHCOMPDIR)/
	$(INSTALL) -m 0644 $(GEN_DIR)/completions/zsh/_rootlesskit $(GEN_DIR)/completions/zsh/_rootlessctl $(DESTDIR)$(ZSHCOMPDIR)/
	$(INSTALL) -m 0644 $(GEN_DIR)/completions/fish/rootlesskit.fish $(GEN_DIR)/completions/fish/rootlessctl.fish $(DESTDIR)$(FISHCOMPDIR)/
	$(INSTALL) -m 0644 LICENSE $(DOCS) $(GEN_DIR)/licences.txt $(DESTDIR)$(DOCDIR)/

install-drivers: $(BUILT)
	$(INSTALL) -d $(DESTDIR)$(LIBEXECDIR)/rootlesskit $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 0755 $(addprefix $(BUILD_DIR)/,$(DRIVERS)) $(DESTDIR)$(LIBEXECDIR)/rootlesskit/
	$(INSTALL) -m 0644 $(addprefix $(GEN_DIR)/man/man1/,$(addsuffix .1,$(DRIVERS))) $(DESTDIR)$(MANDIR)/man1/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(PROGRAMS))
	rm -f $(addprefix $(DESTDIR)$(LIBEXECDIR)/rootlesskit/,$(DRIVERS) $(HELPERS))
	-rmdir $(DESTDIR)$(LIBEXECDIR)/rootlesskit
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(addsuffix .1,$(PROGRAMS) $(DRIVERS)))
	rm -f $(DESTDIR)$(MANDIR)/man7/rootlesskit-driver-protocol.7
	rm -f $(DESTDIR)$(BASHCOMPDIR)/rootlesskit $(DESTDIR)$(BASHCOMPDIR)/rootlessctl
	rm -f $(DESTDIR)$(ZSHCOMPDIR)/_rootlesskit $(DESTDIR)$(ZSHCOMPDIR)/_rootlessctl
	rm -f $(DESTDIR)$(FISHCOMPDIR)/rootlesskit.fish $(DESTDIR)$(FISHCOMPDIR)/rootlessctl.fish
	rm -rf $(DESTDIR)$(DOCDIR)

# Split packages: the core, and one per driver (packaging/build-debs).
deb: $(BUILT)
	PROFILE=$(PROFILE) BUILD_DIR=$(BUILD_DIR) GEN_DIR=$(GEN_DIR) MAKE="$(MAKE)" bash packaging/build-debs $(DEB_DIR)

# Only what this Makefile made; cargo's target/ is left alone.
clean:
	rm -rf $(GEN_DIR) $(DEB_DIR)

FORCE:
