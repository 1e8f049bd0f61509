// The backends' numeric switches are public run-time settings: engine/runtime.h.
#pragma once
#include "engine/runtime.h"
