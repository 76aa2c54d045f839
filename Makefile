# llmcourse: the two commands are `make book` and `make test`.
#
#   make book       set up .venv if needed, build the HTML book into _build/html
#   make test       set up, unit tests, nbval over every notebook, lint of the
#                   stored notebooks, clean builds of the English and the
#                   Chinese book (warnings are errors), translation check
#   make notebooks  re-execute notebooks in place (NOTEBOOKS="a.ipynb b.ipynb"
#                   for a subset), refreshing their stored outputs
#   make book-zh    build the Chinese edition into _build/html-zh
#   make translations        extract the messages, update locale/ (sphinx-intl)
#   make check-translations  check the catalogs against the English text
#   make clean      remove build outputs and caches (keeps .venv)
#   PARTIAL=1       (with book, book-zh or test) build only the pages that exist yet
#   make distclean  also remove .venv and the unpacked MathJax
#
# Heavy steps run under tools/locked.sh, a machine-wide lock, so that two
# builds or notebook runs never share the cores at once.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Python that creates the virtual environment (the course targets 3.11).
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
# torch==2.13.0 may lie on this machine's disk as a CPU wheel; pip must never
# pick a CUDA build from the index for it.
PIP_FIND_LINKS_OPT := $(if $(wildcard /opt/wheels/*.whl),--find-links /opt/wheels,)

# MathJax 3, served by the book itself (no CDN). The tarball comes from the
# npm registry and is checked against this digest before it is unpacked.
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_DIR := _vendor/mathjax
MATHJAX_STAMP := $(MATHJAX_DIR)/.version-$(MATHJAX_VERSION)

# PARTIAL=1 builds only the pages of _toc.yml that exist yet (chapters in
# progress); without it a page listed in _toc.yml but missing is an error.
PARTIAL ?=
BOOK_FLAGS := --warningiserror --nitpick --keep-going \
	$(if $(PARTIAL),--toc _build/partial/_toc.yml --config _build/partial/_config.yml)
PARTIAL_TOC_CMD := $(if $(PARTIAL),$(PY) tools/partial_book.py _build/partial &&,)
# Translations (CONTRIBUTING.md, "Translations"): gettext catalogs, one .po
# per document, under locale/<lang>/LC_MESSAGES/. tools/book_i18n.py runs the
# same Jupyter Book build with its own doctrees (-W --nitpick --keep-going).
LANGUAGES := zh_CN
I18N_FLAGS := $(if $(PARTIAL),--partial,)
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg \
	--nbval-cell-timeout 600 -p no:cacheprovider
NOTEBOOKS ?=
LOCKED := tools/locked.sh

# Same hash seed for every run, so set and dict orders of strings repeat.
export PYTHONHASHSEED := 0
# Quiet the debugger warning that Python 3.11 kernels print at start.
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Same CPU kernels on every x86-64 machine (AVX2 in PyTorch, MKL and oneDNN), so
# that notebooks reproduce their stored outputs on any CPU; see
# llmcourse/notebook.py (CPU_KERNEL_ENV), which sets the same in setup().
ifeq ($(shell uname -m),x86_64)
export ATEN_CPU_CAPABILITY := avx2
export MKL_ENABLE_INSTRUCTIONS := AVX2
export MKL_CBWR := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2
export MKL_DYNAMIC := FALSE
endif

# $(call stage,NAME,COMMAND): run COMMAND, print how long it took.
define stage
	@echo "==> $(1)"; start=$$(date +%s); \
	if $(2); then \
	  echo "<== $(1): ok in $$(( $$(date +%s) - start )) s"; \
	else \
	  rc=$$?; echo "<== $(1): FAILED (exit $$rc) after $$(( $$(date +%s) - start )) s"; exit $$rc; \
	fi
endef

.PHONY: help venv book book-zh translations check-translations test unit nbval lint-notebooks book-clean book-zh-clean notebooks clean distclean

help:
	@sed -n '3,14p' Makefile | sed 's/^# \{0,1\}//'

venv: $(STAMP) $(MATHJAX_STAMP)

$(STAMP): requirements.txt $(wildcard pyproject.toml)
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON_BOOT)"; $(PYTHON_BOOT) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(PIP_FIND_LINKS_OPT) -r requirements.txt
	@if [ -f pyproject.toml ]; then $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .; fi
	@touch $@

$(MATHJAX_STAMP):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax $(MATHJAX_VERSION) from the npm registry"; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  ( cd "$$tmp" && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null ); \
	  echo "$(MATHJAX_SHA256)  $$tmp/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum --check --quiet; \
	  tar -xzf "$$tmp/mathjax-$(MATHJAX_VERSION).tgz" -C "$$tmp" package/LICENSE package/es5/tex-svg.js package/es5/input/tex/extensions; \
	  rm -rf $(MATHJAX_DIR); mkdir -p $(MATHJAX_DIR); \
	  cp -R "$$tmp/package/es5/." $(MATHJAX_DIR)/; cp "$$tmp/package/LICENSE" $(MATHJAX_DIR)/LICENSE; \
	  touch $@; echo "MathJax $(MATHJAX_VERSION) unpacked into $(MATHJAX_DIR)"

book: venv
	$(call stage,book,$(PARTIAL_TOC_CMD) $(LOCKED) $(VENV)/bin/jupyter-book build . $(BOOK_FLAGS))
	@echo "open _build/html/index.html"

book-zh: venv
	$(call stage,book-zh,$(PARTIAL_TOC_CMD) $(LOCKED) $(PY) tools/book_i18n.py html zh_CN $(I18N_FLAGS))
	@echo "open _build/html-zh/index.html"

# Extract every message of the book (_build/gettext/**/*.pot), then merge them
# into the catalogs: new messages arrive untranslated, changed ones fuzzy, and
# removed ones are dropped (no obsolete #~ entries are kept).
translations: venv
	$(call stage,translations,$(PARTIAL_TOC_CMD) $(LOCKED) $(PY) tools/book_i18n.py gettext $(I18N_FLAGS) && \
	  $(VENV)/bin/sphinx-intl update --no-obsolete --jobs 1 --pot-dir _build/gettext --locale-dir locale $(addprefix -l ,$(LANGUAGES)) && \
	  $(PY) tools/check_translations.py --report-only)

# The catalogs against the English text as it is now: no message untranslated,
# fuzzy or obsolete, none missing, markup kept (tools/check_translations.py).
check-translations: venv
	$(call stage,check of the translations,$(PARTIAL_TOC_CMD) $(LOCKED) $(PY) tools/book_i18n.py gettext --quiet $(I18N_FLAGS) && \
	  $(PY) tools/check_translations.py --pot _build/gettext $(I18N_FLAGS))

unit: venv
	$(call stage,unit tests,$(LOCKED) $(PY) -m pytest tests --ignore=tests/browser -q)

# (pytest exits with 5 when it collects nothing: no notebooks yet is not a failure)
nbval: venv
	$(call stage,nbval (notebooks against their stored outputs),$(LOCKED) $(PY) -m pytest $(NBVAL_FLAGS) chapters/ || [ $$? -eq 5 ])

lint-notebooks: venv
	$(call stage,lint of stored notebooks,$(PY) tools/run_notebooks.py --check)

book-clean: venv
	rm -rf _build
	$(call stage,clean book build,$(PARTIAL_TOC_CMD) $(LOCKED) $(VENV)/bin/jupyter-book build . $(BOOK_FLAGS))

# The Chinese edition builds after the English one: its check compares the
# two builds page by page and follows every language-switch link.
book-zh-clean: venv
	rm -rf _build/html-zh _build/.doctrees-zh_CN _build/i18n _build/gettext _build/.doctrees-gettext
	$(call stage,clean Chinese book build and translation check,$(PARTIAL_TOC_CMD) \
	  $(LOCKED) $(PY) tools/book_i18n.py gettext --quiet $(I18N_FLAGS) && \
	  $(LOCKED) $(PY) tools/book_i18n.py html zh_CN $(I18N_FLAGS) && \
	  $(PY) tools/check_translations.py --quiet --pot _build/gettext --html _build/html --html-zh _build/html-zh $(I18N_FLAGS))

test: venv
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory unit lint-notebooks nbval book-clean book-zh-clean; \
	echo "make test: all stages passed in $$(( $$(date +%s) - start )) s"

notebooks: venv
	$(call stage,notebooks,$(LOCKED) $(PY) tools/run_notebooks.py $(NOTEBOOKS))

clean:
	rm -rf _build .pytest_cache
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) _vendor
