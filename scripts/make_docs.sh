#!/usr/bin/env bash
# Regenerate the figures under docs/ (needs the graphviz program).
set -euo pipefail
cd "$(dirname "$0")/.."
resdsl viz specs/resnet1001_preact.res --view overview -o docs/resnet1001_preact_overview.svg
resdsl viz specs/resnet110.res specs/resnet110_bn_after_add.res specs/resnet110_relu_before_add.res \
  specs/resnet110_relu_preact.res specs/resnet110_preact.res --view unit -o docs/fig4_orders.svg
resdsl viz specs/resnet110.res specs/resnet110_shortcut_scale05.res specs/resnet110_frozen_gate.res \
  specs/resnet110_exclusive_gate.res specs/resnet110_shortcut_gate.res specs/resnet110_conv_shortcut.res \
  specs/resnet110_dropout_shortcut.res --view unit -o docs/fig2_shortcuts.svg
