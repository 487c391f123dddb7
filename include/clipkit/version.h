#pragma once
#define CLIPKIT_VERSION_STRING "0.1.0"
