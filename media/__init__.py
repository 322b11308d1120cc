"""Reading and writing pictures: video files (OpenCV/FFmpeg). Plain functions, no Holoscan."""
